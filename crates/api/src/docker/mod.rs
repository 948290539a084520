//! The one boundary between Docker's JSON and Flotilla: request bodies
//! decoded as the Docker daemon decodes them ([`decode`]), responses with
//! the names it emits ([`encode`]).

pub mod decode;
pub mod encode;
