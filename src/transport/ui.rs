//! The enrolment page (ours): `GET /ui/enroll` serves a small page that registers a TOTP over
//! gRPC-web, shows the otpauth URI as a QR code and as text, and verifies the first code.
//! `POST /ui/qr` draws the QR code of the posted text as SVG, so the page needs no script library;
//! the URI travels in a body, never in a URL that could be logged.

use axum::body::Bytes;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

/// Longest text `POST /ui/qr` draws (an otpauth URI is well under it).
const MAX_QR_TEXT: usize = 2048;

/// `GET /ui/enroll`.
pub async fn enroll_page() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        include_str!("ui/enroll.html"),
    )
        .into_response()
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
