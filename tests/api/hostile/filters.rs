//! Every list of every request has a cap: one element over it is refused with
//! the list's field violation, before the message is decoded; lists become
//! sets, so how a list is spelled does not change what it matches.

use super::*;
use prost::Message;

/// (method, the list's field path, a request whose list has `n` elements).
type Case = (&'static str, &'static str, fn(usize) -> Vec<u8>);

fn countries(n: usize) -> Vec<String> {
    vec!["CN".into(); n]
}

fn filter(f: impl Fn(&mut pb::FigureFilter)) -> pb::FigureFilter {
    let mut filter = pb::FigureFilter::default();
    f(&mut filter);
    filter
}

const CASES: [(Case, usize); 19] = [
    (
        (
            "/caravan.v1.QueryService/StreamTradeRecords",
            "filter.reporters",
            |n| {
                pb::StreamTradeRecordsRequest {
                    filter: Some(filter(|f| f.reporters = countries(n))),
                    ..Default::default()
                }
                .encode_to_vec()
            },
        ),
        256,
    ),
    (
        (
            "/caravan.v1.QueryService/StreamTradeRecords",
            "filter.partners",
            |n| {
                pb::StreamTradeRecordsRequest {
                    filter: Some(filter(|f| f.partners = countries(n))),
                    ..Default::default()
                }
                .encode_to_vec()
            },
        ),
        256,
    ),
    (
        (
            "/caravan.v1.QueryService/StreamTradeRecords",
            "filter.flows",
            |n| {
                pb::StreamTradeRecordsRequest {
                    filter: Some(filter(|f| f.flows = vec![1; n])),
                    ..Default::default()
                }
                .encode_to_vec()
            },
        ),
        8,
    ),
    (
        (
            "/caravan.v1.QueryService/StreamTradeRecords",
            "filter.sectors",
            |n| {
                pb::StreamTradeRecordsRequest {
                    filter: Some(filter(|f| f.sectors = vec![2; n])),
                    ..Default::default()
                }
                .encode_to_vec()
            },
        ),
        16,
    ),
    (
        (
            "/caravan.v1.QueryService/Aggregate",
            "filter.reporters",
            |n| {
                pb::AggregateRequest {
                    filter: Some(filter(|f| f.reporters = countries(n))),
                    ..Default::default()
                }
                .encode_to_vec()
            },
        ),
        256,
    ),
    (
        ("/caravan.v1.QueryService/Aggregate", "filter.flows", |n| {
            pb::AggregateRequest {
                filter: Some(filter(|f| f.flows = vec![2; n])),
                ..Default::default()
            }
            .encode_to_vec()
        }),
        8,
    ),
    (
        ("/caravan.v1.QueryService/Aggregate", "group_by", |n| {
            pb::AggregateRequest {
                group_by: vec![1; n],
                ..Default::default()
            }
            .encode_to_vec()
        }),
        8,
    ),
    (
        (
            "/caravan.v1.QueryService/StreamCountryCooperation",
            "partners",
            |n| {
                pb::StreamCountryCooperationRequest {
                    partners: countries(n),
                    ..Default::default()
                }
                .encode_to_vec()
            },
        ),
        256,
    ),
    (
        (
            "/caravan.v1.QueryService/StreamCountryCooperation",
            "sectors",
            |n| {
                pb::StreamCountryCooperationRequest {
                    sectors: vec![3; n],
                    ..Default::default()
                }
                .encode_to_vec()
            },
        ),
        16,
    ),
    (
        (
            "/caravan.v1.QueryService/StreamSectorCooperation",
            "countries",
            |n| {
                pb::StreamSectorCooperationRequest {
                    countries: countries(n),
                    ..Default::default()
                }
                .encode_to_vec()
            },
        ),
        256,
    ),
    (
        (
            "/caravan.v1.QueryService/StreamAgreements",
            "parties",
            |n| {
                pb::StreamAgreementsRequest {
                    parties: countries(n),
                    ..Default::default()
                }
                .encode_to_vec()
            },
        ),
        256,
    ),
    (
        (
            "/caravan.v1.QueryService/StreamAgreements",
            "sectors",
            |n| {
                pb::StreamAgreementsRequest {
                    sectors: vec![4; n],
                    ..Default::default()
                }
                .encode_to_vec()
            },
        ),
        16,
    ),
    (
        ("/caravan.v1.QueryService/StreamAgreements", "kinds", |n| {
            pb::StreamAgreementsRequest {
                kinds: vec![1; n],
                ..Default::default()
            }
            .encode_to_vec()
        }),
        8,
    ),
    (
        (
            "/caravan.v1.QueryService/StreamAgreements",
            "statuses",
            |n| {
                pb::StreamAgreementsRequest {
                    statuses: vec![1; n],
                    ..Default::default()
                }
                .encode_to_vec()
            },
        ),
        8,
    ),
    (
        ("/caravan.v1.SubscriptionService/Subscribe", "kinds", |n| {
            pb::SubscribeRequest {
                kinds: vec![1; n],
                ..Default::default()
            }
            .encode_to_vec()
        }),
        8,
    ),
    (
        (
            "/caravan.v1.SubscriptionService/Subscribe",
            "countries",
            |n| {
                pb::SubscribeRequest {
                    countries: countries(n),
                    ..Default::default()
                }
                .encode_to_vec()
            },
        ),
        256,
    ),
    (
        (
            "/caravan.v1.SubscriptionService/Subscribe",
            "sectors",
            |n| {
                pb::SubscribeRequest {
                    sectors: vec![5; n],
                    ..Default::default()
                }
                .encode_to_vec()
            },
        ),
        16,
    ),
    (
        (
            "/caravan.v1.IngestService/Append",
            "events[0].agreement.parties",
            |n| {
                pb::AppendRequest::new(vec![pb::Event {
                    payload: Some(pb::event::Payload::Agreement(pb::Agreement {
                        parties: countries(n),
                        ..Default::default()
                    })),
                    ..Default::default()
                }])
                .encode_to_vec()
            },
        ),
        256,
    ),
    (
        (
            "/caravan.v1.IngestService/Append",
            "events[0].agreement.sectors",
            |n| {
                pb::AppendRequest::new(vec![pb::Event {
                    payload: Some(pb::event::Payload::Agreement(pb::Agreement {
                        sectors: vec![2; n],
                        ..Default::default()
                    })),
                    ..Default::default()
                }])
                .encode_to_vec()
            },
        ),
        16,
    ),
];

#[tokio::test]
async fn one_element_over_a_lists_cap_is_refused_with_its_field_and_a_million_too() {
    let app = seeded_app().await;
    let before = store_state(&app).await;
    let channel = app.channel().await;
    for ((path, field, build), cap) in CASES {
        for n in [cap + 1, 4 * cap, 100_000] {
            let bytes = build(n);
            // An Append's event over its size limit (3,900 bytes, and the
            // request's few bytes around it) is refused as a whole.
            let whole_event = path.ends_with("/Append") && bytes.len() > 3_900 + 4;
            let status = call_raw(&channel, path, vec![bytes])
                .await
                .expect_err("refused");
            let expected = if whole_event { "events[0]" } else { field };
            assert_refused(
                &status,
                Code::InvalidArgument,
                Some(expected),
                &format!("{path} {n}"),
            );
            assert!(
                whole_event || status.message().contains(&format!("got {n}")),
                "{path}: {}",
                status.message()
            );
        }
        // At the cap the list's length is not what is refused.
        let at_cap = call_raw(&channel, path, vec![build(cap)]).await;
        if let Err(status) = at_cap {
            assert!(
                !status.message().contains("are allowed; got"),
                "{path} at its cap: {status:?}"
            );
        }
    }
    still_serving(&app).await;
    assert_eq!(store_state(&app).await, before);
}

#[tokio::test]
async fn a_list_matches_as_the_set_of_what_it_names_however_spelled() {
    let app = seeded_app().await;
    let mut q = query(&app).await;
    let agreements = |parties: Vec<&str>| pb::StreamAgreementsRequest {
        parties: parties.into_iter().map(String::from).collect(),
        ..Default::default()
    };
    let ids = |answers: Vec<pb::StreamAgreementsResponse>| -> Vec<String> {
        answers
            .into_iter()
            .map(|a| a.agreement.unwrap().agreement.unwrap().agreement_id)
            .collect()
    };
    let once = ids(drain(
        q.stream_agreements(agreements(vec!["KG"]))
            .await
            .unwrap()
            .into_inner(),
    )
    .await
    .unwrap());
    assert!(!once.is_empty());
    let spelled = agreements(["KG", "kgz", "KGZ", "kg"].repeat(60));
    let many = ids(
        drain(q.stream_agreements(spelled).await.unwrap().into_inner())
            .await
            .unwrap(),
    );
    assert_eq!(once, many);
}

#[tokio::test]
async fn an_inverted_date_range_is_invalid_argument_like_an_inverted_period_range() {
    let app = seeded_app().await;
    let mut q = query(&app).await;
    let date = |year, month, day| pb::Date { year, month, day };
    let err = q
        .stream_agreements(pb::StreamAgreementsRequest {
            signed_from: Some(date(2024, 1, 1)),
            signed_to: Some(date(2023, 12, 31)),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_refused(&err, Code::InvalidArgument, Some("signed_to"), "dates");
    let same_day = q
        .stream_agreements(pb::StreamAgreementsRequest {
            signed_from: Some(date(2023, 5, 19)),
            signed_to: Some(date(2023, 5, 19)),
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(!drain(same_day.into_inner()).await.unwrap().is_empty());
}
