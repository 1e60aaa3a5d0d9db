//! `GET /openapi.json`: an OpenAPI 3 description of the REST face: the operations come from the
//! table of RPCs ([`rpcs::ALL`]), the message schemas are written here. A test checks every documented path and status against the running server.

use serde_json::{Value, json};

use super::rpcs::{self, Rpc};

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
/// 400, 401, 403, 404, 429, 500 and 503 in the shape of `Error`.
fn responses(schema: &str, extra: &[(&str, &str)]) -> Value {
    let mut responses = json!({
        "200": { "description": "OK", "content": { "application/json": { "schema": reference(schema) } } },
        "400": error_response("Invalid request (code 3) or failed precondition (code 9)"),
        "401": error_response("Missing or invalid token (code 16)"),
        "403": error_response("No matching permissions (code 7)"),
        "404": error_response("User or registration not found (code 5)"),
        "429": error_response("The service is overloaded, try again later (code 8)"),
        "500": error_response("Internal error (code 13)"),
        "503": error_response("The database is unavailable, try again later (code 14)"),
    });
    for (status, description) in extra {
        responses[*status] = error_response(description);
    }
    responses
}

fn user_id_parameter() -> Value {
    json!({ "name": "userId", "in": "path", "required": true, "schema": string() })
}

fn operation(rpc: &Rpc, schemas: &Value) -> Value {
    let summary = format!("{} (permission: {})", rpc.summary, rpc.permission);
    let mut op = json!({
        "operationId": rpc.name,
        "summary": summary,
        "security": [{ "bearer": [] }],
        "responses": responses(rpc.response_schema, rpc.extra_statuses),
    });
    match (rpc.body_schema, rpc.rest_query) {
        (Some(filters), true) => {
            let properties = schemas[filters]["properties"].as_object();
            let parameters: Vec<Value> = properties
                .into_iter()
                .flatten()
                .map(|(name, schema)| {
                    json!({ "name": name, "in": "query", "required": false, "explode": true, "schema": schema })
                })
                .collect();
            op["parameters"] = Value::Array(parameters);
        }
        (Some(body), false) => {
            op["requestBody"] = json!({
                "required": false,
                "content": { "application/json": { "schema": reference(body) } }
            });
        }
        (None, _) => {}
    }
    op
}

fn object(properties: Value, required: &[&str]) -> Value {
    json!({ "type": "object", "properties": properties, "required": required })
}

/// The operations of every RPC of the table, by REST path.
fn paths(schemas: &Value) -> Value {
    let mut paths = serde_json::Map::new();
    for rpc in rpcs::ALL {
        let item = paths.entry(rpc.rest_path).or_insert_with(|| json!({}));
        if rpc.rest_path.contains("{userId}") {
            item["parameters"] = json!([user_id_parameter()]);
        }
        item[rpc.rest_method.as_str().to_lowercase()] = operation(rpc, schemas);
    }
    Value::Object(paths)
}

/// The document.
pub fn document() -> Value {
    let schemas = schemas();
    json!({
        "openapi": "3.0.3",
        "info": {
            "title": "totp-service",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "TOTP second factors, speaking ZITADEL's user service v2 API. Errors carry gRPC codes; see SPEC.md."
        },
        "components": {
            "securitySchemes": { "bearer": { "type": "http", "scheme": "bearer", "bearerFormat": "JWT" } },
            "schemas": schemas,
        },
        "paths": paths(&schemas),
    })
}

/// The schemas of the messages the operations name.
fn schemas() -> Value {
    json!({
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
        "ImportTOTPRequest": object(json!({
            "userId": string(),
            "uri": { "type": "string", "description": "otpauth://totp/ URI; or give secret and the parameters" },
            "secret": { "type": "string", "description": "base32, at least 16 bytes" },
            "algorithm": { "type": "string", "enum": ["TOTP_ALGORITHM_UNSPECIFIED", "TOTP_ALGORITHM_SHA1", "TOTP_ALGORITHM_SHA256", "TOTP_ALGORITHM_SHA512"] },
            "digits": { "type": "integer", "enum": [0, 6, 8], "description": "0 means 6" },
            "period": { "type": "integer", "minimum": 0, "maximum": 120, "description": "seconds, 15 to 120; 0 means 30" },
            "pending": { "type": "boolean", "description": "wait for a first code before the TOTP is ready" },
        }), &[]),
        "GenerateRecoveryCodesRequest": object(json!({
            "userId": string(),
            "count": { "type": "integer", "minimum": 1, "description": "codes to add, at most TOTP_RECOVERY_CODES_MAX (10) with the unused ones" },
        }), &["count"]),
        "GenerateRecoveryCodesResponse": object(json!({
            "details": reference("Details"),
            "recoveryCodes": { "type": "array", "items": { "type": "string", "description": "ABCD-EFGH-JKLM: shown this once, only a hash is kept" } },
        }), &["details", "recoveryCodes"]),
        "CheckRecoveryCodeResponse": object(json!({
            "details": reference("Details"),
            "remaining": { "type": "integer", "description": "recovery codes left after this one" },
        }), &["details"]),
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
            "authMethodTypes": { "type": "array", "items": { "type": "string", "enum": ["AUTHENTICATION_METHOD_TYPE_TOTP", "AUTHENTICATION_METHOD_TYPE_RECOVERY_CODE"] } },
        }), &["details"]),
        "ListAuthenticationFactorsFilters": object(json!({
            "authFactors": { "type": "array", "items": { "type": "string", "enum": ["OTP", "OTP_SMS", "OTP_EMAIL", "U2F"] } },
            "states": { "type": "array", "items": reference("AuthFactorState") },
        }), &[]),
        "AuthFactorState": { "type": "string", "enum": ["AUTH_FACTOR_STATE_UNSPECIFIED", "AUTH_FACTOR_STATE_NOT_READY", "AUTH_FACTOR_STATE_READY", "AUTH_FACTOR_STATE_REMOVED"] },
        "ListAuthenticationFactorsResponse": object(json!({
            "result": { "type": "array", "items": object(json!({
                "state": reference("AuthFactorState"),
                "otp": object(json!({}), &[]),
            }), &["state"]) },
        }), &[]),
    })
}
