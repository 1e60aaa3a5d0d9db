//! gRPC-web framing: a message becomes a data frame, a response body splits into messages and the
//! trailer frame's fields.

/// A length-prefixed, uncompressed data frame holding `message`.
pub fn frame(message: &[u8]) -> Vec<u8> {
    let mut body = Vec::with_capacity(message.len() + 5);
    body.push(0);
    body.extend_from_slice(&(message.len() as u32).to_be_bytes());
    body.extend_from_slice(message);
    body
}

/// The messages and the trailer fields (lowercased names) of a gRPC-web response body.
/// A truncated frame ends the parse.
pub fn parse_body(mut bytes: &[u8]) -> (Vec<Vec<u8>>, Vec<(String, String)>) {
    let mut messages = vec![];
    let mut trailers = vec![];
    while bytes.len() >= 5 {
        let flag = bytes[0];
        let len = u32::from_be_bytes([bytes[1], bytes[2], bytes[3], bytes[4]]) as usize;
        let Some(frame) = bytes.get(5..5 + len) else {
            break;
        };
        if flag & 0x80 != 0 {
            for line in String::from_utf8_lossy(frame).split("\r\n") {
                if let Some((key, value)) = line.split_once(':') {
                    trailers.push((key.trim().to_ascii_lowercase(), value.trim().to_owned()));
                }
            }
        } else {
            messages.push(frame.to_vec());
        }
        bytes = &bytes[5 + len..];
    }
    (messages, trailers)
}

/// A field of a gRPC-web answer (`grpc-status`, `grpc-message`, …): from the trailer frame of
/// `trailers` (see [`parse_body`]), else from the headers (a trailers-only answer).
pub fn field(
    headers: &http::HeaderMap,
    trailers: &[(String, String)],
    name: &str,
) -> Option<String> {
    trailers
        .iter()
        .find(|(key, _)| key == name)
        .map(|(_, value)| value.clone())
        .or_else(|| {
            headers
                .get(name)
                .and_then(|value| value.to_str().ok())
                .map(str::to_owned)
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_framed_message_and_trailers_parse_back() {
        let mut body = frame(b"hello");
        let trailer = b"grpc-status: 5\r\ngrpc-message: not%20found\r\n";
        body.push(0x80);
        body.extend_from_slice(&(trailer.len() as u32).to_be_bytes());
        body.extend_from_slice(trailer);
        let (messages, trailers) = parse_body(&body);
        assert_eq!(messages, vec![b"hello".to_vec()]);
        assert_eq!(
            trailers,
            vec![
                ("grpc-status".to_owned(), "5".to_owned()),
                ("grpc-message".to_owned(), "not%20found".to_owned())
            ]
        );
    }

    #[test]
    fn a_truncated_frame_is_not_a_panic() {
        let body = [0u8, 0, 0, 0, 9, 1, 2];
        assert_eq!(parse_body(&body), (vec![], vec![]));
    }
}
