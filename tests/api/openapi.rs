//! `/openapi.json` is kept true: every documented operation is called on the running server, for
//! success and for each error it can be driven into, and each answer's status must be documented
//! for that operation and its body must match the documented schema.

use serde_json::Value;

use crate::support::*;

/// Checks `value` against a schema of the subset the document uses: `$ref`, `type`,
/// `properties`, `required`, `items`, `enum`. Returns the first mismatch.
fn check(value: &Value, schema: &Value, document: &Value, at: &str) -> Result<(), String> {
    if let Some(reference) = schema["$ref"].as_str() {
        let name = reference.trim_start_matches("#/components/schemas/");
        return check(
            value,
            &document["components"]["schemas"][name],
            document,
            at,
        );
    }
    let matches = match schema["type"].as_str() {
        Some("object") => value.is_object(),
        Some("string") => value.is_string(),
        Some("integer") => value.is_i64() || value.is_u64(),
        Some("boolean") => value.is_boolean(),
        Some("array") => value.is_array(),
        Some(other) => {
            return Err(format!(
                "{at}: the document uses type {other}, unknown here"
            ));
        }
        None => true,
    };
    if !matches {
        return Err(format!("{at}: {value} is not of type {}", schema["type"]));
    }
    if let Some(allowed) = schema["enum"].as_array()
        && !allowed.contains(value)
    {
        return Err(format!("{at}: {value} is not one of {allowed:?}"));
    }
    for required in schema["required"].as_array().into_iter().flatten() {
        let name = required.as_str().unwrap();
        if value.get(name).is_none() {
            return Err(format!("{at}: required field {name} is missing in {value}"));
        }
    }
    if let Some(properties) = schema["properties"].as_object() {
        for (name, field) in value.as_object().into_iter().flatten() {
            match properties.get(name) {
                Some(field_schema) => {
                    check(field, field_schema, document, &format!("{at}.{name}"))?
                }
                None => return Err(format!("{at}: field {name} is not documented")),
            }
        }
    }
    if let Some(items) = schema.get("items") {
        for (index, item) in value.as_array().into_iter().flatten().enumerate() {
            check(item, items, document, &format!("{at}[{index}]"))?;
        }
    }
    Ok(())
}

/// Sends a request and checks the answer against the operation's documented responses.
async fn conforms(
    h: &Harness,
    document: &Value,
    template: &str,
    method: &str,
    user_id: &str,
    auth: &Auth,
    body: Option<String>,
) -> u16 {
    let path = template.replace("{userId}", user_id);
    let (status, _, bytes) = h
        .rest_raw(method, &path, auth, body.map(String::into_bytes))
        .await;
    let operation = &document["paths"][template][method.to_lowercase()];
    let documented = &operation["responses"][status.to_string()];
    assert!(
        documented.is_object(),
        "{method} {template} answered {status}, which is not documented"
    );
    let schema = &documented["content"]["application/json"]["schema"];
    let value: Value = serde_json::from_slice(&bytes).unwrap();
    if let Err(mismatch) = check(&value, schema, document, "body") {
        panic!("{method} {template} {status}: {mismatch}");
    }
    status
}

pub async fn openapi_document_matches_live_responses(backend: Backend, protocol: Protocol) {
    let h = Harness::start(Options::new(backend, protocol)).await;
    let (status, _, bytes) = h.rest_raw("GET", "/openapi.json", &Auth::None, None).await;
    assert_eq!(status, 200);
    let document: Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(document["openapi"], "3.0.3");

    let admin = h.admin();
    let stranger = h.token("stranger", &[]);
    let long_id = "x".repeat(201);
    let mut covered = vec![];
    for (template, item) in document["paths"].as_object().unwrap() {
        for method in ["get", "post", "delete"] {
            let Some(operation) = item.get(method) else {
                continue;
            };
            let id = operation["operationId"].as_str().unwrap().to_owned();
            let http = method.to_uppercase();
            // A user in the state the operation succeeds on, and the body it takes.
            // v2beta operations take the same set-up as their v2 twins.
            let (user_id, body) = match id.trim_start_matches("v2beta.") {
                "AddHumanUser" => {
                    let user = TestUser {
                        id: unique("user"),
                        org: unique("org"),
                        email: "a@example.com".into(),
                    };
                    (
                        String::new(),
                        Some(serde_json::to_string(&human_request(&user)).unwrap()),
                    )
                }
                "VerifyTOTPRegistration" => {
                    let (user, secret) = h.user_with_pending_totp().await;
                    (
                        user.id,
                        Some(format!(r#"{{"code":"{}"}}"#, h.code(&secret, 0))),
                    )
                }
                "CheckTOTP" => {
                    let (user, secret) = h.user_with_ready_totp().await;
                    (
                        user.id,
                        Some(format!(r#"{{"code":"{}"}}"#, h.code(&secret, 1))),
                    )
                }
                "ImportTOTP" => (
                    h.new_user().await.id,
                    Some(r#"{"secret":"GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ","digits":8}"#.into()),
                ),
                "RemoveTOTP" => (h.user_with_pending_totp().await.0.id, None),
                "GenerateRecoveryCodes" => (h.new_user().await.id, Some(r#"{"count":3}"#.into())),
                "RemoveRecoveryCodes" | "CheckRecoveryCode" => {
                    let user = h.new_user().await;
                    let codes = h
                        .generate_recovery_codes(&admin, &user.id, 1)
                        .await
                        .unwrap()
                        .recovery_codes;
                    let body = format!(r#"{{"code":"{}"}}"#, codes[0]);
                    (user.id, (method == "post").then_some(body))
                }
                "UnlockUser" => {
                    let user = h.new_user().await;
                    h.lock_user(&admin, &user.id).await.unwrap();
                    (user.id, Some("{}".into()))
                }
                _ => (
                    h.new_user().await.id,
                    (method == "post").then(|| "{}".to_owned()),
                ),
            };
            assert_eq!(
                conforms(
                    &h,
                    &document,
                    template,
                    &http,
                    &user_id,
                    &admin,
                    body.clone()
                )
                .await,
                200,
                "{id}"
            );
            assert_eq!(
                conforms(
                    &h,
                    &document,
                    template,
                    &http,
                    &user_id,
                    &Auth::None,
                    body.clone()
                )
                .await,
                401,
                "{id}"
            );
            assert_eq!(
                conforms(
                    &h,
                    &document,
                    template,
                    &http,
                    &user_id,
                    &stranger,
                    body.clone()
                )
                .await,
                403,
                "{id}"
            );
            if template.contains("{userId}") {
                assert_eq!(
                    conforms(
                        &h,
                        &document,
                        template,
                        &http,
                        &unique("nobody"),
                        &admin,
                        body.clone()
                    )
                    .await,
                    404,
                    "{id}"
                );
                assert_eq!(
                    conforms(
                        &h,
                        &document,
                        template,
                        &http,
                        &long_id,
                        &admin,
                        body.clone()
                    )
                    .await,
                    400,
                    "{id}"
                );
            } else {
                assert_eq!(
                    conforms(&h, &document, template, &http, "", &admin, body.clone()).await,
                    409,
                    "{id}"
                );
            }
            covered.push(id);
        }
    }
    covered.sort();
    let v2 = [
        "AddHumanUser",
        "DeleteUser",
        "GetUserByID",
        "ListAuthenticationFactors",
        "ListAuthenticationMethodTypes",
        "LockUser",
        "RegisterTOTP",
        "RemoveTOTP",
        "UnlockUser",
        "VerifyTOTPRegistration",
    ];
    // ZITADEL's v2beta has no recovery codes.
    let v2_only = ["GenerateRecoveryCodes", "RemoveRecoveryCodes"];
    let ours = ["CheckRecoveryCode", "CheckTOTP", "ImportTOTP"];
    let mut expected: Vec<String> = v2
        .iter()
        .chain(&v2_only)
        .chain(&ours)
        .map(|name| name.to_string())
        .chain(v2.iter().map(|name| format!("v2beta.{name}")))
        .collect();
    expected.sort();
    assert_eq!(covered, expected, "every REST operation is documented");
}
