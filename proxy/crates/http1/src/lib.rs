//! Portcullis' HTTP/1.1 codec, written for a proxy on httparse (docs/decisions/0002-httparse-codec.md):
//! request heads parsed once into offsets ([`request`]), the framing rules that keep requests
//! from being smuggled, the one canonical request path ([`path`]), response heads
//! ([`response`]), how a response body leaves ([`plan`]), strict chunked scanning
//! ([`chunked`]) and numbers written without `core::fmt` ([`digits`]).
//!
//! Must not: do I/O, name a runtime, or know anything of gateway policy (APIs, auth, limits,
//! config). Its only dependency is httparse; the tidy test `crate_dependencies_hold` keeps it so.
//! Every rule here is unit tested without sockets.

pub mod chunked;
pub mod digits;
pub mod error;
pub mod path;
pub mod plan;
pub mod request;
pub mod response;

pub use error::{HeadError, HeadErrorKind};
pub use request::{
    parse_request, BodyKind, Header, HeaderList, HeaderSpan, Headers, Method, Request, RequestHead, RequestMeta, Span,
    TargetForm, MAX_HEADERS,
};
pub use response::{forwards_verbatim, prepare_response, PreparedResponse, ResponseMeta};
