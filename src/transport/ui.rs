//! The enrolment page (ours): `GET /ui/enroll` serves a small page that registers a TOTP over
//! gRPC-web, shows the otpauth URI as a QR code and as text, and verifies the first code.
//! `POST /ui/qr` draws the QR code of the posted text as SVG, so the page needs no script library;
//! the URI travels in a body, never in a URL that could be logged.

use axum::body::Bytes;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

/// Longest text `POST /ui/qr` draws (an otpauth URI is well under it).
const MAX_QR_TEXT: usize = 2048;

/// What the page may load and do: its own script, style and calls, no inline code, no framing
/// (clickjacking), and nothing else.
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'none'; \
     frame-ancestors 'none'";

/// One file of the page, with the headers every one of them gets: no caching, no content-type
/// guessing, no referrer (the page's address may carry a token in its fragment until the script
/// removes it).
fn page_file(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-store"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::REFERRER_POLICY, "no-referrer"),
        ],
        body,
    )
        .into_response()
}

/// `GET /ui/enroll`.
pub async fn enroll_page() -> Response {
    let mut page = page_file("text/html; charset=utf-8", include_str!("ui/enroll.html"));
    let headers = page.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        header::HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    headers.insert(
        header::X_FRAME_OPTIONS,
        header::HeaderValue::from_static("DENY"),
    );
    page
}

/// `GET /ui/enroll.js`.
pub async fn enroll_script() -> Response {
    page_file(
        "text/javascript; charset=utf-8",
        include_str!("ui/enroll.js"),
    )
}

/// `GET /ui/enroll.css`.
pub async fn enroll_style() -> Response {
    page_file("text/css; charset=utf-8", include_str!("ui/enroll.css"))
}

/// `POST /ui/qr`: the QR code of the body's text, as SVG.
pub async fn qr_code(body: Bytes) -> Response {
    if body.len() > MAX_QR_TEXT {
        return (StatusCode::PAYLOAD_TOO_LARGE, "text too long for a QR code").into_response();
    }
    match qrcode::QrCode::new(&body) {
        Ok(code) => {
            let svg = code
                .render::<qrcode::render::svg::Color<'_>>()
                .min_dimensions(256, 256)
                .quiet_zone(true)
                .build();
            (
                [
                    (header::CONTENT_TYPE, "image/svg+xml"),
                    (header::CACHE_CONTROL, "no-store"),
                ],
                svg,
            )
                .into_response()
        }
        Err(_) => (StatusCode::BAD_REQUEST, "text does not fit a QR code").into_response(),
    }
}
