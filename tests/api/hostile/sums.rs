//! Sums are exact: a total that does not fit the wire's int64 is OUT_OF_RANGE
//! naming what it is the total of, never a clamped number.

use super::*;

/// 9,600 energy figures of USD 10^15 each: China → Kazakhstan, 2022.
async fn huge_figures(app: &TestApp) {
    let events = (0..9_600)
        .map(|i| {
            let mut e = trade(
                &format!("huge-{i}"),
                "CN",
                "KZ",
                2022,
                1_000_000_000_000_000,
            );
            record_mut(&mut e).commodity = Some(pb::CommodityScope {
                scope: Some(pb::commodity_scope::Scope::HsCode(format!("27{i:04}"))),
            });
            e
        })
        .collect();
    append(&mut app.ingest().await, events)
        .await
        .expect("stored");
}

fn hs6_2022() -> pb::FigureFilter {
    pb::FigureFilter {
        level: pb::CommodityLevel::Hs6 as i32,
        periods: Some(annual_range(2022, 2022)),
        ..Default::default()
    }
}

async fn first_error<T>(s: Result<tonic::Response<tonic::Streaming<T>>, Status>) -> Status {
    match s {
        Err(status) => status,
        Ok(r) => drain(r.into_inner()).await.err().expect("the stream fails"),
    }
}

#[tokio::test]
async fn a_total_beyond_int64_is_out_of_range_naming_its_group_or_slice() {
    let app = spawn_app().await;
    huge_figures(&app).await;
    let mut q = query(&app).await;
    let status = first_error(
        q.aggregate(pb::AggregateRequest {
            filter: Some(hs6_2022()),
            group_by: vec![pb::GroupBy::Reporter as i32],
            ..Default::default()
        })
        .await,
    )
    .await;
    assert_refused(&status, Code::OutOfRange, None, "aggregate");
    assert!(
        status
            .message()
            .contains("the group (reporter CN, partner any"),
        "{status:?}"
    );
    let status = first_error(
        q.stream_country_cooperation(pb::StreamCountryCooperationRequest {
            country: "CN".into(),
            periods: Some(annual_range(2022, 2022)),
            level: pb::CommodityLevel::Hs6 as i32,
            ..Default::default()
        })
        .await,
    )
    .await;
    assert_refused(&status, Code::OutOfRange, None, "country view");
    assert!(status.message().contains("CN → KZ in 2022"), "{status:?}");
    let status = first_error(
        q.stream_sector_cooperation(pb::StreamSectorCooperationRequest {
            sector: pb::Sector::Energy as i32,
            periods: Some(annual_range(2022, 2022)),
            level: pb::CommodityLevel::Hs6 as i32,
            ..Default::default()
        })
        .await,
    )
    .await;
    assert_refused(&status, Code::OutOfRange, None, "sector view");
    // Grouped finer, every total fits and is exact.
    let groups = drain(
        q.aggregate(pb::AggregateRequest {
            filter: Some(pb::FigureFilter {
                hs_prefix: "2700".into(),
                ..hs6_2022()
            }),
            group_by: vec![pb::GroupBy::Reporter as i32],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner(),
    )
    .await
    .unwrap();
    let exports = groups[0]
        .group
        .as_ref()
        .unwrap()
        .totals
        .as_ref()
        .unwrap()
        .exports
        .clone();
    assert_eq!(usd(exports.as_ref()), 100 * 1_000_000_000_000_000);
    // Each figure alone still streams.
    let records = drain(
        q.stream_trade_records(pb::StreamTradeRecordsRequest {
            filter: Some(hs6_2022()),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner(),
    )
    .await
    .unwrap();
    assert_eq!(
        records.iter().map(|m| m.records.len()).sum::<usize>(),
        9_600
    );
}

#[tokio::test]
async fn a_growth_beyond_int64_hundredths_is_out_of_range() {
    let app = spawn_app().await;
    let mut tiny = trade("tiny", "CN", "KZ", 2021, 0);
    record_mut(&mut tiny).value = Some(pb::Money {
        currency_code: "USD".into(),
        units: 0,
        nanos: 1,
    });
    let huge = trade("huge", "CN", "KZ", 2022, 1_000_000_000_000_000);
    append(&mut app.ingest().await, vec![tiny, huge])
        .await
        .unwrap();
    let status = first_error(
        query(&app)
            .await
            .stream_country_cooperation(pb::StreamCountryCooperationRequest {
                country: "CN".into(),
                periods: Some(annual_range(2022, 2022)),
                ..Default::default()
            })
            .await,
    )
    .await;
    assert_refused(&status, Code::OutOfRange, None, "growth");
}
