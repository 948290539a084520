//! The one boundary between Docker's JSON and Flotilla: request bodies
//! decoded as the Docker daemon decodes them ([`decode`]), responses with
//! the names it emits ([`encode`]) and the objects shaped as it shows them
//! ([`shown`], [`network`]).

pub mod decode;
pub mod encode;
pub mod network;
pub mod shown;

#[cfg(test)]
mod bodies_tests;
