//! The access matrix: every caller × every RPC, over TLS, gets the code its
//! credentials and scopes call for, and a refused call changes nothing.

use super::*;
use caravan::grpc::Reflection;
use caravan::proto::v1::query_service_client::QueryServiceClient;
use caravan::proto::v1::subscription_service_client::SubscriptionServiceClient;
use std::time::Duration;
use tokio_stream::StreamExt;
use tonic::Code;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Rpc {
    Append,
    AppendStream,
    LookupEvents,
    StreamTradeRecords,
    StreamCountryCooperation,
    StreamSectorCooperation,
    StreamAgreements,
    Aggregate,
    Subscribe,
    Reflection,
    Health,
}

const RPCS: [Rpc; 11] = [
    Rpc::Append,
    Rpc::AppendStream,
    Rpc::LookupEvents,
    Rpc::StreamTradeRecords,
    Rpc::StreamCountryCooperation,
    Rpc::StreamSectorCooperation,
    Rpc::StreamAgreements,
    Rpc::Aggregate,
    Rpc::Subscribe,
    Rpc::Reflection,
    Rpc::Health,
];

/// What a call came to: its code, and for AppendStream the code of the
/// first event's answer (0 for an acknowledgement).
#[derive(Debug, PartialEq, Eq)]
struct Outcome {
    code: Code,
    event: Option<i32>,
}

fn periods() -> Option<pb::PeriodRange> {
    Some(pb::PeriodRange {
        frequency: pb::Frequency::Annual as i32,
        from: None,
        to: None,
    })
}

/// Makes one call of `rpc` as the holder of `token`; an event it appends
/// is of feed A, with an id made from `n`.
async fn call(rpc: Rpc, ch: &Channel, token: Option<&str>, n: usize) -> Outcome {
    let ok = |event| Outcome {
        code: Code::Ok,
        event,
    };
    let failed = |s: tonic::Status| Outcome {
        code: s.code(),
        event: None,
    };
    let event = trade_of("feed-a", &format!("m{n}"), "CN", "KZ", n as i64);
    let q = || QueryServiceClient::new(ch.clone());
    // Reads every message of a stream (they are few here).
    macro_rules! drain {
        ($call:expr) => {
            match $call.await {
                Err(s) => failed(s),
                Ok(r) => {
                    let mut s = r.into_inner();
                    loop {
                        match s.message().await {
                            Ok(Some(_)) => continue,
                            Ok(None) => break ok(None),
                            Err(e) => break failed(e),
                        }
                    }
                }
            }
        };
    }
    match rpc {
        Rpc::Append => match IngestServiceClient::new(ch.clone())
            .append(authed(pb::AppendRequest::new(vec![event]), token))
            .await
        {
            Ok(_) => ok(None),
            Err(s) => failed(s),
        },
        Rpc::AppendStream => {
            let requests = tokio_stream::iter(vec![pb::AppendStreamRequest { event: Some(event) }]);
            match IngestServiceClient::new(ch.clone())
                .append_stream(authed(requests, token))
                .await
            {
                Err(s) => failed(s),
                Ok(r) => match r.into_inner().message().await {
                    Ok(Some(answer)) => ok(Some(match answer.result {
                        Some(pb::append_stream_response::Result::Ack(_)) => 0,
                        Some(pb::append_stream_response::Result::Rejection(r)) => r.code,
                        None => -1,
                    })),
                    Ok(None) => ok(None),
                    Err(s) => failed(s),
                },
            }
        }
        Rpc::LookupEvents => match IngestServiceClient::new(ch.clone())
            .lookup_events(authed(pb::LookupEventsRequest::default(), token))
            .await
        {
            Ok(_) => ok(None),
            Err(s) => failed(s),
        },
        Rpc::StreamTradeRecords => drain!(q().stream_trade_records(authed(
            pb::StreamTradeRecordsRequest {
                filter: Some(pb::FigureFilter {
                    periods: periods(),
                    ..Default::default()
                }),
                ..Default::default()
            },
            token
        ))),
        Rpc::StreamCountryCooperation => drain!(q().stream_country_cooperation(authed(
            pb::StreamCountryCooperationRequest {
                country: "CN".into(),
                periods: periods(),
                ..Default::default()
            },
            token
        ))),
        Rpc::StreamSectorCooperation => drain!(q().stream_sector_cooperation(authed(
            pb::StreamSectorCooperationRequest {
                sector: pb::Sector::Energy as i32,
                periods: periods(),
                ..Default::default()
            },
            token
        ))),
        Rpc::StreamAgreements => {
            drain!(q().stream_agreements(authed(pb::StreamAgreementsRequest::default(), token)))
        }
        Rpc::Aggregate => drain!(q().aggregate(authed(
            pb::AggregateRequest {
                filter: Some(pb::FigureFilter {
                    periods: periods(),
                    ..Default::default()
                }),
                ..Default::default()
            },
            token
        ))),
        Rpc::Subscribe => {
            let request = pb::SubscribeRequest {
                start: Some(pb::subscribe_request::Start::FromBeginning(
                    pb::FromBeginning {},
                )),
                ..Default::default()
            };
            match SubscriptionServiceClient::new(ch.clone())
                .subscribe(authed(request, token))
                .await
            {
                Err(s) => failed(s),
                // The store holds events: the first message comes at once.
                Ok(r) => {
                    match tokio::time::timeout(Duration::from_secs(10), r.into_inner().message())
                        .await
                        .expect("a first message")
                    {
                        Ok(_) => ok(None),
                        Err(s) => failed(s),
                    }
                }
            }
        }
        Rpc::Reflection => {
            use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
            use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
            use tonic_reflection::pb::v1::ServerReflectionRequest;
            let request = ServerReflectionRequest {
                host: String::new(),
                message_request: Some(MessageRequest::ListServices(String::new())),
            };
            match ServerReflectionClient::new(ch.clone())
                .server_reflection_info(authed(tokio_stream::iter(vec![request]), token))
                .await
            {
                Err(s) => failed(s),
                Ok(r) => match r.into_inner().next().await {
                    Some(Ok(_)) => ok(None),
                    Some(Err(s)) => failed(s),
                    None => ok(None),
                },
            }
        }
        Rpc::Health => {
            use tonic_health::pb::health_client::HealthClient;
            match HealthClient::new(ch.clone())
                .check(authed(
                    tonic_health::pb::HealthCheckRequest {
                        service: String::new(),
                    },
                    token,
                ))
                .await
            {
                Ok(r) => {
                    assert_eq!(r.into_inner().status, 1, "SERVING");
                    ok(None)
                }
                Err(s) => failed(s),
            }
        }
    }
}

/// What each caller may do.
#[derive(Clone, Copy, Debug)]
enum Caller {
    Nobody,
    WrongToken,
    Revoked,
    Read,
    IngestA,
    IngestB,
    Admin,
}

fn expected(caller: Caller, rpc: Rpc) -> Outcome {
    use Caller::*;
    use Rpc::*;
    let code = |code| Outcome { code, event: None };
    let stream_event = |event| Outcome {
        code: Code::Ok,
        event: Some(event),
    };
    if rpc == Health {
        return code(Code::Ok);
    }
    match caller {
        Nobody | WrongToken | Revoked => code(Code::Unauthenticated),
        Read => match rpc {
            StreamTradeRecords
            | StreamCountryCooperation
            | StreamSectorCooperation
            | StreamAgreements
            | Aggregate
            | Subscribe => code(Code::Ok),
            _ => code(Code::PermissionDenied),
        },
        IngestA => match rpc {
            Append | LookupEvents => code(Code::Ok),
            AppendStream => stream_event(0),
            _ => code(Code::PermissionDenied),
        },
        IngestB => match rpc {
            LookupEvents => code(Code::Ok),
            // Scope enough for the call; the event of feed A is refused.
            AppendStream => stream_event(Code::PermissionDenied as i32),
            _ => code(Code::PermissionDenied),
        },
        Admin => match rpc {
            Reflection => code(Code::Ok),
            _ => code(Code::PermissionDenied),
        },
    }
}

#[tokio::test]
async fn every_caller_gets_the_code_its_credentials_and_scopes_call_for_on_every_rpc() {
    let read = Who::token("reader", &["read"], &[]);
    let a = Who::token("ingest-a", &["ingest"], &["feed-a"]);
    let b = Who::token("ingest-b", &["ingest"], &["feed-b"]);
    let admin = Who::token("operator", &["admin"], &[]);
    let revoked = Who::token("revoked", &["read", "ingest", "admin"], &["feed-a"]);
    // Sees the whole store, to check that refused calls change nothing.
    let observer = Who::token("observer", &["ingest", "read"], &["*"]);
    let everyone = [&read, &a, &b, &admin, &revoked, &observer];
    let secure = secure_app(&auth_file(&everyone), None, |c| {
        c.reflection = Some(Reflection::Admin);
    })
    .await;
    let ch = secure.channel(None).await.unwrap();
    let observer_token = observer.token.as_deref().unwrap();
    // A store with an event, so that subscriptions have something to send.
    append_as(
        &ch,
        a.token.as_deref().unwrap(),
        vec![trade_of("feed-a", "first", "CN", "UZ", 1)],
    )
    .await
    .unwrap();
    // The revoked identity works until the file no longer has it.
    assert_eq!(
        call(Rpc::Append, &ch, revoked.token.as_deref(), 0).await,
        Outcome {
            code: Code::Ok,
            event: None
        }
    );
    secure.reload_auth(&auth_file(&[&read, &a, &b, &admin, &observer]));

    let wrong = caravan_token();
    let callers: [(Caller, Option<&str>); 7] = [
        (Caller::Nobody, None),
        (Caller::WrongToken, Some(&wrong)),
        (Caller::Revoked, revoked.token.as_deref()),
        (Caller::Read, read.token.as_deref()),
        (Caller::IngestA, a.token.as_deref()),
        (Caller::IngestB, b.token.as_deref()),
        (Caller::Admin, admin.token.as_deref()),
    ];
    let mut n = 1;
    for (caller, token) in callers {
        for rpc in RPCS {
            n += 1;
            let before = last_as(&ch, observer_token).await;
            let got = call(rpc, &ch, token, n).await;
            let want = expected(caller, rpc);
            assert_eq!(got, want, "{caller:?} calling {rpc:?}");
            let after = last_as(&ch, observer_token).await;
            let stored = matches!(
                (rpc, &got),
                (Rpc::Append, Outcome { code: Code::Ok, .. })
                    | (Rpc::AppendStream, Outcome { event: Some(0), .. })
            );
            assert_eq!(
                after,
                before + u64::from(stored),
                "{caller:?} calling {rpc:?}: the store changed by {}",
                after - before
            );
        }
    }
    secure.app.stop().await;
}

#[tokio::test]
async fn reflection_is_open_limited_to_admins_or_off_as_configured() {
    let admin = Who::token("operator", &["admin"], &[]);
    let reader = Who::token("reader", &["read"], &[]);
    for (setting, nobody, read, operator) in [
        (Reflection::Open, Code::Ok, Code::Ok, Code::Ok),
        (
            Reflection::Admin,
            Code::Unauthenticated,
            Code::PermissionDenied,
            Code::Ok,
        ),
        (
            Reflection::Off,
            Code::Unauthenticated,
            Code::Unimplemented,
            Code::Unimplemented,
        ),
    ] {
        let secure = secure_app(&auth_file(&[&admin, &reader]), None, |c| {
            c.reflection = Some(setting);
        })
        .await;
        let ch = secure.channel(None).await.unwrap();
        for (token, expected) in [
            (None, nobody),
            (reader.token.as_deref(), read),
            (admin.token.as_deref(), operator),
        ] {
            let got = call(Rpc::Reflection, &ch, token, 0).await;
            assert_eq!(got.code, expected, "{setting:?} with {token:?}");
        }
        secure.app.stop().await;
    }
}
