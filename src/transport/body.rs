//! Request bodies of the browser-facing protocols (REST, Connect, gRPC-web, and any unknown
//! path): each is read whole, up to [`MAX_BODY_BYTES`] and within the body read timeout, before a
//! handler sees it, so that no path holds more than the limit in memory and a client that sends
//! slowly cannot hold a request open. Too large or too slow is answered in the protocol of the
//! request (SPEC.md §6): REST and unknown paths get HTTP 413 (408) with the JSON error body,
//! Connect its error JSON, gRPC-web a trailers-only answer with `grpc-status`.
//!
//! Native gRPC (HTTP/2) does not come here: tonic reads it message by message under the same
//! size limit, and a stream can be refused without harm to its connection.

use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http::{HeaderValue, StatusCode, header};
use http_body::Body as _;
use http_body_util::BodyExt;

use super::MAX_BODY_BYTES;
use crate::domain::error::{self, Error};

/// Why a body was not read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Refusal {
    TooLarge,
    TooSlow,
    /// The client broke the connection off; nobody is left to answer.
    Broken,
}

/// Reads the request's body (see the module's summary) and hands the request on with it.
pub async fn read_whole(State(timeout): State<Duration>, request: Request, next: Next) -> Response {
    let (parts, body) = request.into_parts();
    // Over HTTP/1 the rest of an oversized body is read and thrown away (never kept), so that
    // the client, still sending, reads the answer instead of a reset connection. Over HTTP/2 the
    // stream is simply refused.
    let drain = parts.version < http::Version::HTTP_2;
    match tokio::time::timeout(timeout, read_limited(body, drain)).await {
        Ok(Ok(bytes)) => {
            next.run(Request::from_parts(parts, Body::from(bytes)))
                .await
        }
        Ok(Err(refusal)) => refuse(&parts, refusal),
        Err(_) => refuse(&parts, Refusal::TooSlow),
    }
}

/// The body, if it holds at most [`MAX_BODY_BYTES`].
async fn read_limited(mut body: Body, drain: bool) -> Result<Bytes, Refusal> {
    // Sized by the announced length, when there is one, so that the buffer never doubles past
    // the limit.
    let announced = body.size_hint().exact().unwrap_or(0);
    if announced > MAX_BODY_BYTES as u64 {
        // Refused without keeping a byte; only drained.
        drain_all(body, drain).await?;
        return Err(Refusal::TooLarge);
    }
    let mut kept: Vec<u8> = Vec::with_capacity(announced as usize);
    let mut too_large = false;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|_| Refusal::Broken)?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        if too_large {
            continue;
        }
        if kept.len() + data.len() > MAX_BODY_BYTES {
            too_large = true;
            kept = Vec::new();
            if !drain {
                break;
            }
        } else if kept.is_empty() && body.is_end_stream() {
            // A body of one frame (most): no copy.
            return Ok(data);
        } else {
            kept.extend_from_slice(&data);
        }
    }
    if too_large {
        Err(Refusal::TooLarge)
    } else {
        Ok(Bytes::from(kept))
    }
}

/// Reads the body to its end (over HTTP/1, see [`read_whole`]) without keeping it.
async fn drain_all(mut body: Body, drain: bool) -> Result<(), Refusal> {
    if drain {
        while let Some(frame) = body.frame().await {
            frame.map_err(|_| Refusal::Broken)?;
        }
    }
    Ok(())
}

/// The answer to a body not read, in the request's protocol.
fn refuse(parts: &http::request::Parts, refusal: Refusal) -> Response {
    let (error, status) = match refusal {
        Refusal::TooLarge => (
            Error::Validation(format!("request body exceeds {MAX_BODY_BYTES} bytes")),
            StatusCode::PAYLOAD_TOO_LARGE,
        ),
        Refusal::TooSlow | Refusal::Broken => (
            Error::Validation("the request body was not received in time".to_owned()),
            StatusCode::REQUEST_TIMEOUT,
        ),
    };
    let content_type = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let mut response = if content_type.starts_with("application/grpc-web") {
        grpc_web_refusal(content_type, refusal)
    } else if super::connect::is_connect(parts) {
        let error = match refusal {
            Refusal::TooLarge => Error::Rejected(error::BODY_TOO_LARGE),
            _ => error,
        };
        super::connect::error_response(&error)
    } else {
        super::rest::RestError::with_status(error, status).into_response()
    };
    // An HTTP/1 body not read to its end leaves the connection unusable (an oversized one was
    // drained, see `read_whole`); HTTP/2 has no such header, and ends just the stream.
    if refusal != Refusal::TooLarge && parts.version < http::Version::HTTP_2 {
        response
            .headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    response
}

/// A trailers-only gRPC-web answer: status in the headers, no message.
fn grpc_web_refusal(content_type: &str, refusal: Refusal) -> Response {
    let (status, message) = match refusal {
        Refusal::TooLarge => (
            tonic::Code::ResourceExhausted,
            format!("request message exceeds {MAX_BODY_BYTES} bytes"),
        ),
        Refusal::TooSlow | Refusal::Broken => (
            tonic::Code::DeadlineExceeded,
            "the request was not received in time".to_owned(),
        ),
    };
    let content_type = HeaderValue::from_str(content_type)
        .unwrap_or(HeaderValue::from_static("application/grpc-web"));
    let mut response = Response::new(Body::empty());
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, content_type);
    headers.insert("grpc-status", HeaderValue::from(status as i32));
    if let Ok(message) = HeaderValue::from_str(&message) {
        headers.insert("grpc-message", message);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunked(chunks: Vec<usize>) -> Body {
        let frames: Vec<Result<Bytes, std::io::Error>> = chunks
            .into_iter()
            .map(|n| Ok(Bytes::from(vec![b'x'; n])))
            .collect();
        Body::from_stream(tonic::codegen::tokio_stream::iter(frames))
    }

    #[tokio::test]
    async fn bodies_up_to_the_limit_are_kept_whole() {
        let bytes = read_limited(chunked(vec![1000, MAX_BODY_BYTES - 1000]), true)
            .await
            .unwrap();
        assert_eq!(bytes.len(), MAX_BODY_BYTES);
        let bytes = read_limited(Body::from("{}"), true).await.unwrap();
        assert_eq!(&bytes[..], b"{}");
    }

    #[tokio::test]
    async fn one_byte_over_the_limit_is_too_large_whether_drained_or_not() {
        for drain in [true, false] {
            let refused = read_limited(chunked(vec![MAX_BODY_BYTES, 1, 5]), drain).await;
            assert_eq!(refused, Err(Refusal::TooLarge), "drain {drain}");
        }
    }
}
