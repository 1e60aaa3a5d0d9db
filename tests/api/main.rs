//! The integration suite: every case runs against the real server over REST, gRPC, gRPC-web and
//! Connect (JSON), on SQLite and on Postgres (`DATABASE_URL`, which `scripts/test.sh` provides);
//! over gRPC also on Postgres with the user cache off, so that every command takes the writer's
//! read-decide-write path.

mod abuse;
mod binary;
mod cases;
mod fuzz;
mod hardening;
mod lifecycle;
mod logs;
mod openapi;
mod process;
mod support;
mod tokens;

use abuse::*;
use cases::*;
use fuzz::*;
use hardening::*;
use openapi::*;
use tokens::*;

/// Declares one test per case, for one backend and one protocol.
macro_rules! matrix {
    ($module:ident, $backend:ident, $protocol:ident, [$($case:ident),* $(,)?]) => {
        mod $module {
            use crate::support::{Backend, Protocol};
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    crate::$case(Backend::$backend, Protocol::$protocol).await;
                }
            )*
        }
    };
}

/// Declares every case for every backend and protocol (and Postgres without the user cache over
/// gRPC).
macro_rules! every_protocol_and_backend {
    ($cases:tt) => {
        matrix!(sqlite_rest, Sqlite, Rest, $cases);
        matrix!(sqlite_grpc, Sqlite, Grpc, $cases);
        matrix!(sqlite_grpc_web, Sqlite, GrpcWeb, $cases);
        matrix!(postgres_rest, Postgres, Rest, $cases);
        matrix!(postgres_grpc, Postgres, Grpc, $cases);
        matrix!(postgres_grpc_web, Postgres, GrpcWeb, $cases);
        matrix!(sqlite_connect, Sqlite, Connect, $cases);
        matrix!(postgres_connect, Postgres, Connect, $cases);
        matrix!(postgres_uncached_grpc, PostgresUncached, Grpc, $cases);
    };
}

every_protocol_and_backend!([
    register_returns_an_otpauth_uri_and_a_32_character_secret,
    an_imported_uri_is_ready_at_once_and_checked_with_its_parameters,
    an_import_by_parts_takes_the_usual_defaults_and_may_wait_for_a_first_code,
    import_replaces_a_pending_totp_and_is_refused_over_a_ready_one,
    import_refuses_each_bad_parameter_by_name_and_appends_nothing,
    authentication_factors_show_the_totp_as_otp_in_its_state,
    authentication_factors_need_the_user_and_the_permission_to_read_it,
    recovery_codes_are_shown_once_used_once_and_removed,
    recovery_codes_need_a_count_in_range_the_user_and_the_permission,
    wrong_recovery_codes_count_towards_the_lockout_like_wrong_totp_codes,
    one_recovery_code_sent_in_parallel_is_accepted_once,
    the_v2beta_service_runs_a_whole_life_with_its_own_messages,
    v2beta_refuses_as_v2_does,
    registering_again_before_verifying_replaces_the_secret,
    registering_after_verifying_is_refused,
    verify_accepts_the_previous_current_and_next_step,
    verify_refuses_a_code_two_steps_old,
    verify_trims_surrounding_white_space,
    verify_refuses_seven_digit_and_non_digit_codes,
    verify_without_registration_is_not_found,
    verify_twice_is_refused,
    remove_works_on_pending_and_ready_registrations,
    remove_without_registration_is_not_found,
    unknown_user_is_not_found_on_every_call,
    empty_and_overlong_fields_fail_validation,
    bad_tokens_are_unauthenticated,
    callers_without_permission_are_refused,
    permission_in_the_users_org_or_every_org_is_enough,
    users_may_serve_themselves_but_not_delete_themselves,
    sequence_grows_by_one_per_event_and_change_date_is_now,
    adding_a_user_twice_is_refused,
    add_human_user_needs_an_org_id,
    deleted_users_are_not_found,
    get_user_shows_the_stored_fields_and_state,
    list_authentication_methods_shows_totp_once_ready,
    check_accepts_a_ready_totp_code_once,
    check_refuses_pending_and_missing_totp,
    a_code_is_never_accepted_twice,
    wrong_codes_lock_the_user_after_max_attempts,
    lock_and_unlock_user,
    imported_secrets_make_a_ready_totp,
    parallel_submissions_of_one_code_succeed_exactly_once,
    parallel_wrong_codes_are_evaluated_exactly_max_attempts_times,
    two_instances_on_one_database_count_exactly,
    an_instance_never_acts_on_a_state_another_instance_changed,
    wrong_codes_on_verify_count_towards_the_lockout,
    secrets_under_a_removed_key_fail_clearly_and_rekey_moves_them,
    metrics_count_requests_by_rpc_protocol_and_code,
    requests_that_take_too_long_are_abandoned,
    parallel_new_users_and_changes_do_not_starve_each_other,
    parallel_changes_of_every_kind_each_land_whole,
    tokens_verify_against_a_jwks_url,
    tokens_verify_against_a_jwks_file,
    tokens_must_name_the_audience_and_have_sane_times,
    control_characters_are_refused_in_every_stored_or_looked_up_string,
    a_locked_user_cannot_register_or_remove_its_own_totp,
    self_service_needs_the_users_organisation_when_the_token_names_one,
    malformed_messages_are_invalid_argument,
    a_full_database_queue_answers_resource_exhausted_at_once,
    oversized_bodies_are_refused_in_the_protocol_at_any_size,
    random_requests_never_get_a_server_error,
]);

// REST-only cases: JSON forms, bodies and routing.
matrix!(
    sqlite_rest_only,
    Sqlite,
    Rest,
    [
        rest_accepts_snake_case_and_camel_case_keys,
        rest_path_user_id_wins_over_body,
        authentication_factor_filters_in_the_query_string_are_read_or_refused,
        rest_refuses_malformed_json_and_wrong_content_types,
        rest_answers_unknown_paths_and_wrong_methods_with_the_error_body,
        rest_refuses_oversized_bodies,
        rest_health_endpoints_answer,
        request_ids_are_taken_or_made_and_echoed,
        grpc_calls_to_unknown_services_and_methods_are_unimplemented,
        connect_answers_protobuf_bodies,
        openapi_document_matches_live_responses,
        grpc_health_and_reflection_answer_without_a_token,
        the_enrolment_page_and_its_qr_codes_are_served,
        json_null_means_the_field_is_absent,
        get_and_delete_on_users_human_address_the_user_named_human,
        a_path_that_is_not_utf8_is_a_validation_error,
        health_and_reflection_take_at_most_64_kib_too,
        silent_and_slow_clients_are_cut_off_after_the_read_timeouts,
        connections_beyond_the_cap_wait_for_a_free_place,
    ]
);
matrix!(
    sqlite_connect_only,
    Sqlite,
    Connect,
    [json_null_means_the_field_is_absent]
);
matrix!(
    postgres_rest_only,
    Postgres,
    Rest,
    [
        rest_accepts_snake_case_and_camel_case_keys,
        rest_path_user_id_wins_over_body,
        json_null_means_the_field_is_absent,
        get_and_delete_on_users_human_address_the_user_named_human,
    ]
);

// Postgres-only storage cases (the group-commit writer); the protocol does not matter.
matrix!(
    postgres_storage_only,
    Postgres,
    Grpc,
    [
        a_batch_aborted_to_break_a_deadlock_is_decided_again,
        a_request_the_database_refuses_fails_no_other,
    ]
);
matrix!(
    postgres_uncached_storage_only,
    PostgresUncached,
    Grpc,
    [
        a_batch_aborted_to_break_a_deadlock_is_decided_again,
        a_request_the_database_refuses_fails_no_other,
    ]
);
