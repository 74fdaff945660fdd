//! A client for OCI distribution (registry v2) APIs: reference normalisation,
//! authentication, manifest resolution, verified and resumable blob transfers.
