//! `GET /openapi.json`: an OpenAPI 3 description of the REST face, built here beside the routes
//! it describes. A test checks every documented path and status against the running server.

use serde_json::{Value, json};

fn reference(name: &str) -> Value {
    json!({ "$ref": format!("#/components/schemas/{name}") })
}

fn string() -> Value {
    json!({ "type": "string" })
}

fn error_response(description: &str) -> Value {
    json!({
        "description": description,
        "content": { "application/json": { "schema": reference("Error") } }
    })
}

/// The responses of an operation answering `schema` on success; every call may fail with
/// 400, 401, 403, 404 and 500 in the shape of `Error`.
fn responses(schema: &str, extra: &[(&str, &str)]) -> Value {
    let mut responses = json!({
        "200": { "description": "OK", "content": { "application/json": { "schema": reference(schema) } } },
        "400": error_response("Invalid request (code 3) or failed precondition (code 9)"),
        "401": error_response("Missing or invalid token (code 16)"),
        "403": error_response("No matching permissions (code 7)"),
        "404": error_response("User or registration not found (code 5)"),
        "500": error_response("Internal error (code 13)"),
    });
    for (status, description) in extra {
        responses[*status] = error_response(description);
    }
    responses
}

fn user_id_parameter() -> Value {
    json!({ "name": "userId", "in": "path", "required": true, "schema": string() })
}

fn operation(
    id: &str,
    summary: &str,
    body: Option<&str>,
    response: &str,
    extra: &[(&str, &str)],
) -> Value {
    let mut op = json!({
        "operationId": id,
        "summary": summary,
        "security": [{ "bearer": [] }],
        "responses": responses(response, extra),
    });
    if let Some(body) = body {
        op["requestBody"] = json!({
            "required": false,
            "content": { "application/json": { "schema": reference(body) } }
        });
    }
    op
}

fn object(properties: Value, required: &[&str]) -> Value {
    json!({ "type": "object", "properties": properties, "required": required })
}

/// The document.
pub fn document() -> Value {
    let too_large = ("413", "Body over 64 KiB (code 3)");
    let user_path = |op: Value| json!({ "parameters": [user_id_parameter()], "post": op });
    json!({
        "openapi": "3.0.3",
        "info": {
            "title": "totp-service",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "TOTP second factors, speaking ZITADEL's user service v2 API. Errors carry gRPC codes; see SPEC.md."
        },
        "components": {
            "securitySchemes": { "bearer": { "type": "http", "scheme": "bearer", "bearerFormat": "JWT" } },
            "schemas": {
                "Details": object(json!({
                    "sequence": { "type": "string", "description": "uint64 as a string" },
                    "changeDate": { "type": "string", "format": "date-time" },
                    "resourceOwner": string(),
                }), &["sequence", "changeDate", "resourceOwner"]),
                "ListDetails": object(json!({
                    "totalResult": { "type": "string" },
                    "processedSequence": { "type": "string" },
                    "timestamp": { "type": "string", "format": "date-time" },
                }), &[]),
                "ErrorDetail": object(json!({
                    "@type": { "type": "string", "enum": ["type.googleapis.com/zitadel.v1.ErrorDetail"] },
                    "id": string(),
                    "message": string(),
                }), &["@type", "id", "message"]),
                "Error": object(json!({
                    "code": { "type": "integer" },
                    "message": string(),
                    "details": { "type": "array", "items": reference("ErrorDetail") },
                }), &["code", "message", "details"]),
                "DetailsResponse": object(json!({ "details": reference("Details") }), &["details"]),
                "UserIdRequest": object(json!({ "userId": string() }), &[]),
                "CodeRequest": object(json!({ "userId": string(), "code": string() }), &["code"]),
                "RegisterTOTPResponse": object(json!({
                    "details": reference("Details"),
                    "uri": string(),
                    "secret": string(),
                }), &["details", "uri", "secret"]),
                "AddHumanUserRequest": object(json!({
                    "userId": string(),
                    "username": string(),
                    "organization": object(json!({ "orgId": string(), "orgDomain": string() }), &[]),
                    "profile": object(json!({
                        "givenName": string(), "familyName": string(), "nickName": string(),
                        "displayName": string(), "preferredLanguage": string(),
                        "gender": { "type": "string", "enum": ["GENDER_UNSPECIFIED", "GENDER_FEMALE", "GENDER_MALE", "GENDER_DIVERSE"] },
                    }), &["givenName", "familyName"]),
                    "email": object(json!({ "email": string(), "isVerified": { "type": "boolean" } }), &["email"]),
                    "totpSecret": { "type": "string", "description": "base32, at least 16 bytes; imports a ready TOTP" },
                }), &["profile", "email"]),
                "AddHumanUserResponse": object(json!({ "userId": string(), "details": reference("Details") }), &["userId", "details"]),
                "User": object(json!({
                    "userId": string(),
                    "state": { "type": "string", "enum": ["USER_STATE_ACTIVE", "USER_STATE_LOCKED"] },
                    "username": string(),
                    "loginNames": { "type": "array", "items": string() },
                    "preferredLoginName": string(),
                    "human": object(json!({
                        "profile": object(json!({ "givenName": string(), "familyName": string() }), &[]),
                        "email": object(json!({ "email": string(), "isVerified": { "type": "boolean" } }), &[]),
                    }), &[]),
                    "details": reference("Details"),
                }), &["userId", "state", "username"]),
                "GetUserByIDResponse": object(json!({ "details": reference("Details"), "user": reference("User") }), &["details", "user"]),
                "ListAuthenticationMethodTypesResponse": object(json!({
                    "details": reference("ListDetails"),
                    "authMethodTypes": { "type": "array", "items": { "type": "string", "enum": ["AUTHENTICATION_METHOD_TYPE_TOTP"] } },
                }), &["details"]),
            }
        },
        "paths": {
            "/v2/users/human": {
                "post": operation("AddHumanUser", "Add a human user (optionally with an imported TOTP)", Some("AddHumanUserRequest"), "AddHumanUserResponse", &[("409", "User already exists (code 6)"), too_large]),
            },
            "/v2/users/{userId}": {
                "parameters": [user_id_parameter()],
                "get": operation("GetUserByID", "Get a user", None, "GetUserByIDResponse", &[]),
                "delete": operation("DeleteUser", "Delete a user", None, "DetailsResponse", &[]),
            },
            "/v2/users/{userId}/lock": user_path(operation("LockUser", "Lock a user until unlocked", Some("UserIdRequest"), "DetailsResponse", &[])),
            "/v2/users/{userId}/unlock": user_path(operation("UnlockUser", "Unlock a user", Some("UserIdRequest"), "DetailsResponse", &[])),
            "/v2/users/{userId}/authentication_methods": {
                "parameters": [user_id_parameter()],
                "get": operation("ListAuthenticationMethodTypes", "The user's ready authentication methods", None, "ListAuthenticationMethodTypesResponse", &[]),
            },
            "/v2/users/{userId}/totp": {
                "parameters": [user_id_parameter()],
                "post": operation("RegisterTOTP", "Register a TOTP (a pending one is replaced)", Some("UserIdRequest"), "RegisterTOTPResponse", &[("409", "TOTP already set up (code 6)")]),
                "delete": operation("RemoveTOTP", "Remove the TOTP", None, "DetailsResponse", &[]),
            },
            "/v2/users/{userId}/totp/verify": user_path(operation("VerifyTOTPRegistration", "Verify the pending TOTP with its first code", Some("CodeRequest"), "DetailsResponse", &[too_large])),
            "/v2/users/{userId}/totp/check": user_path(operation("CheckTOTP", "Check a code of the ready TOTP at login", Some("CodeRequest"), "DetailsResponse", &[too_large])),
        }
    })
}
