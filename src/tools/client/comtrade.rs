//! UN Comtrade's CSV download layout → events. Pure parsing: no I/O.
//!
//! Columns used (by header name; the others are ignored): `freqCode` (`A`
//! annual, `M` monthly), `refYear`, `period` (`2022` or `202203`),
//! `reporterISO` and `partnerISO` (ISO 3166-1 alpha-3; `W00` World and other
//! areas are refused), `flowCode` (`X`, `M`, `RX`, `RM`), `cmdCode` (`TOTAL`
//! or an HS code of 2, 4 or 6 digits), `primaryValue` (USD, a decimal such as
//! `1234567.89`, converted exactly), `qty` with `qtyUnitAbbr` (optional), and
//! `reporterDesc`/`partnerDesc`/`cmdDesc` for messages. Text may be UTF-8 or
//! ISO-8859-1 (decided per field).
//!
//! Depends only on the generated messages.

use crate::proto::v1 as pb;
use std::borrow::Cow;

/// Column positions found in a header.
pub struct Columns {
    freq: usize,
    year: usize,
    period: usize,
    reporter: usize,
    partner: usize,
    flow: usize,
    cmd: usize,
    value: usize,
    qty: Option<usize>,
    qty_unit: Option<usize>,
    partner_desc: Option<usize>,
}

/// Whether a header line looks like a Comtrade download.
pub fn is_comtrade_header(header: &[String]) -> bool {
    [
        "freqCode",
        "reporterISO",
        "partnerISO",
        "flowCode",
        "cmdCode",
        "primaryValue",
    ]
    .iter()
    .all(|c| header.iter().any(|h| h == c))
}

impl Columns {
    pub fn from_header(header: &[String]) -> Result<Columns, String> {
        let find = |name: &str| header.iter().position(|h| h == name);
        let need =
            |name: &str| find(name).ok_or_else(|| format!("the header has no {name} column"));
        Ok(Columns {
            freq: need("freqCode")?,
            year: need("refYear")?,
            period: need("period")?,
            reporter: need("reporterISO")?,
            partner: need("partnerISO")?,
            flow: need("flowCode")?,
            cmd: need("cmdCode")?,
            value: need("primaryValue")?,
            qty: find("qty"),
            qty_unit: find("qtyUnitAbbr"),
            partner_desc: find("partnerDesc"),
        })
    }
}

/// A field's text: UTF-8 when it is valid UTF-8, else ISO-8859-1.
pub fn text(bytes: &[u8]) -> String {
    field_text(bytes).into_owned()
}

/// A field's text, borrowed when it is UTF-8 (no copy), trimmed.
fn field_text(bytes: &[u8]) -> Cow<'_, str> {
    match std::str::from_utf8(bytes) {
        Ok(s) => Cow::Borrowed(s.trim()),
        Err(_) => Cow::Owned(
            bytes
                .iter()
                .map(|&b| char::from(b))
                .collect::<String>()
                .trim()
                .to_owned(),
        ),
    }
}

/// Parses a non-negative decimal ("1234567.89") exactly into whole units and
/// billionths.
pub fn decimal(s: &str) -> Result<(i64, i32), String> {
    let s = s.trim();
    let (whole, frac) = s.split_once('.').unwrap_or((s, ""));
    if whole.is_empty() && frac.is_empty()
        || !whole.bytes().all(|b| b.is_ascii_digit())
        || !frac.bytes().all(|b| b.is_ascii_digit())
    {
        return Err(format!("{s:?} is not a non-negative decimal number"));
    }
    if frac.len() > 9 {
        return Err(format!("{s:?} has more than 9 decimal places"));
    }
    let units: i64 = if whole.is_empty() {
        0
    } else {
        whole.parse().map_err(|_| format!("{s:?} is too large"))?
    };
    let nanos: i32 = format!("{frac:0<9}")
        .parse()
        .map_err(|_| format!("{s:?} is not a number"))?;
    Ok((units, nanos))
}

/// One row → an event (without id: the caller derives it), or why not. The
/// fields are read in place from the csv crate's record (copied only into
/// the event's own strings).
pub fn row_to_event(c: &Columns, row: &csv::ByteRecord, feed: &str) -> Result<pb::Event, String> {
    let get = |i: usize| field_text(row.get(i).unwrap_or(b""));
    let (freq, year_text) = (get(c.freq), get(c.year));
    let year: i32 = year_text
        .parse()
        .map_err(|_| format!("refYear {year_text:?} is not a year"))?;
    let period = match freq.as_ref() {
        "A" => pb::Period {
            year,
            frequency: pb::Frequency::Annual as i32,
            number: 0,
        },
        "M" => {
            let p = get(c.period);
            let month = p
                .strip_prefix(&year.to_string())
                .and_then(|m| m.parse::<i32>().ok())
                .ok_or_else(|| format!("period {p:?} is not YYYYMM of refYear {year}"))?;
            pb::Period {
                year,
                frequency: pb::Frequency::Monthly as i32,
                number: month,
            }
        }
        other => {
            return Err(format!(
                "freqCode {other:?} is not A (annual) or M (monthly)"
            ))
        }
    };
    let flow = match get(c.flow).as_ref() {
        "X" => pb::Flow::Export,
        "M" => pb::Flow::Import,
        "RX" => pb::Flow::ReExport,
        "RM" => pb::Flow::ReImport,
        other => return Err(format!("flowCode {other:?} is not X, M, RX or RM")),
    };
    let country = |col: usize, desc: Option<usize>, what: &str| -> Result<String, String> {
        let code = get(col);
        let code = code.as_ref();
        crate::domain::Country::parse(code)
            .map(|c| c.alpha2().to_owned())
            .map_err(|_| {
                let desc = desc.map(get).filter(|d| !d.is_empty());
                let name = desc.as_deref().unwrap_or(code);
                if code == "W00" {
                    format!("{what} W00 (World) is not a country: area totals are not stored")
                } else {
                    format!(
                        "{what} {code:?} ({name}) is not an ISO 3166-1 country (an area or group?)"
                    )
                }
            })
    };
    let reporter = country(c.reporter, None, "reporter")?;
    let partner = country(c.partner, c.partner_desc, "partner")?;
    let cmd = get(c.cmd);
    let scope = if cmd.eq_ignore_ascii_case("TOTAL") {
        pb::commodity_scope::Scope::All(pb::AllCommodities {})
    } else {
        pb::commodity_scope::Scope::HsCode(cmd.into_owned())
    };
    let (units, nanos) = decimal(&get(c.value)).map_err(|e| format!("primaryValue: {e}"))?;
    let quantity = match (c.qty.map(get), c.qty_unit.map(get)) {
        (Some(q), Some(unit)) if !q.is_empty() && !unit.is_empty() && unit != "N/A" => {
            let (whole, nanos) = decimal(&q).map_err(|e| format!("qty: {e}"))?;
            Some(pb::Quantity {
                whole,
                nanos,
                unit: unit.into_owned(),
            })
        }
        _ => None,
    };
    Ok(pb::Event {
        event_id: String::new(),
        feed: feed.to_owned(),
        occurred_at: None,
        payload: Some(pb::event::Payload::TradeRecord(pb::TradeRecord {
            reporter,
            partner,
            flow: flow as i32,
            period: Some(period),
            commodity: Some(pb::CommodityScope { scope: Some(scope) }),
            value: Some(pb::Money {
                currency_code: "USD".into(),
                units,
                nanos,
            }),
            quantity,
            source: "UN Comtrade".into(),
            note: String::new(),
        })),
    })
}

/// The Comtrade header `caravan gen` writes (a subset of the download's columns,
/// in its order).
pub const GEN_HEADER: &str = "typeCode,freqCode,refPeriodId,refYear,refMonth,period,reporterCode,reporterISO,reporterDesc,flowCode,flowDesc,partnerCode,partnerISO,partnerDesc,cmdCode,cmdDesc,qtyUnitAbbr,qty,netWgt,cifvalue,fobvalue,primaryValue";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimals_convert_exactly() {
        assert_eq!(decimal("1234567.89").unwrap(), (1_234_567, 890_000_000));
        assert_eq!(decimal("7").unwrap(), (7, 0));
        assert_eq!(decimal("0.000000001").unwrap(), (0, 1));
        assert!(decimal("-5").is_err());
        assert!(decimal("1e9").is_err());
        assert!(decimal("0.0000000001").is_err());
    }

    #[test]
    fn latin1_fields_are_decoded() {
        assert_eq!(text(b"C\xf4te d'Ivoire"), "Côte d'Ivoire");
        assert_eq!(text("Côte".as_bytes()), "Côte");
    }
}
