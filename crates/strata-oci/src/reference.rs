//! Image references (`[registry[:port]/]repository[:tag|@digest]`), normalised exactly as Docker does.
