//! A small ledger service for the tests and the example (feature `demo`): the generated
//! tonic code of `proto/ledger.proto`, compiled with protox (no system `protoc`).

#![allow(
    missing_docs,
    missing_debug_implementations,
    unreachable_pub,
    unused_qualifications,
    clippy::all,
    clippy::pedantic
)]

tonic::include_proto!("ledger");
