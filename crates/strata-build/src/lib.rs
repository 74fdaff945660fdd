//! The solver behind `strata build`: schedules the stage graph, computes each
//! step's content-addressed cache key, runs or reuses steps, implements COPY/ADD
//! semantics and the exporters. It reports progress through events and never
//! prints.
