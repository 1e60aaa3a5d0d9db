//! A request that does not decode is the client's mistake: code 3 INVALID_ARGUMENT. tonic answers
//! it with 13 INTERNAL, the code operators alert on, which any client could then raise at will.
//! Two parts: the protobuf codec of our own services (set in `build.rs`), and, for what tonic
//! itself refuses before any service sees the request (broken framing, a missing message, bad
//! gRPC-web base64, and the health and reflection services' own codec),
//! [`client_mistakes_are_invalid_argument`] on the gRPC routes.

use std::marker::PhantomData;

use prost::Message;
use tonic::Status;
use tonic::codec::{BufferSettings, Codec, DecodeBuf, Decoder};
use tonic_prost::ProstEncoder;

/// prost's codec with client-error decoding (see the module's summary).
#[derive(Debug, Clone)]
pub struct ProtoCodec<T, U> {
    _messages: PhantomData<(T, U)>,
}

impl<T, U> Default for ProtoCodec<T, U> {
    fn default() -> Self {
        ProtoCodec {
            _messages: PhantomData,
        }
    }
}

impl<T, U> Codec for ProtoCodec<T, U>
where
    T: Message + Send + 'static,
    U: Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = ProstEncoder<T>;
    type Decoder = ProtoDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        ProstEncoder::new(BufferSettings::default())
    }

    fn decoder(&mut self) -> Self::Decoder {
        ProtoDecoder {
            _message: PhantomData,
        }
    }
}

/// Decodes `U`; a malformed message is code 3.
#[derive(Debug, Clone)]
pub struct ProtoDecoder<U> {
    _message: PhantomData<U>,
}

impl<U: Message + Default> Decoder for ProtoDecoder<U> {
    type Item = U;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<U>, Status> {
        // prost's message names the broken wire structure, never the bytes themselves.
        U::decode(buf).map(Some).map_err(|error| {
            Status::invalid_argument(format!("the request message does not decode: {error}"))
        })
    }
}

/// The beginnings of the messages tonic (and tonic-web) give a request it cannot read. Every one
/// is about the bytes the client sent; none is ever sent by our handlers, whose internal errors
/// read "An internal error occurred".
const UNREADABLE_REQUEST: [&str; 6] = [
    "Missing request message",
    "protocol error: received message",
    "Unexpected EOF decoding stream",
    "Error decompressing",
    "failed to decode Protobuf message",
    "tonic-web: ",
];

/// Turns tonic's 13 for an unreadable request into 3 (a trailers-only answer: the request is
/// refused before any message is sent, so its status is in the headers).
pub async fn client_mistakes_are_invalid_argument(
    mut response: axum::response::Response,
) -> axum::response::Response {
    let headers = response.headers_mut();
    if headers.get("grpc-status").is_some_and(|code| code == "13") {
        let message = headers
            .get("grpc-message")
            .and_then(|m| m.to_str().ok())
            .map(|m| m.replace("%20", " "))
            .unwrap_or_default();
        if UNREADABLE_REQUEST
            .iter()
            .any(|start| message.starts_with(start))
        {
            headers.insert(
                "grpc-status",
                http::HeaderValue::from(tonic::Code::InvalidArgument as i32),
            );
        }
    }
    response
}
