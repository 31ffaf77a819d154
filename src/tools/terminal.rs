//! Human-readable rendering of wire values for terminals: money in billions,
//! percentages with one decimal, periods. Exact integer arithmetic only.
//! Depends on the generated types.

use crate::proto::v1 as pb;

const NANOS_PER_HUNDREDTH_BN: i128 = 10_000_000_000_000_000; // 1e7 USD in nanos

fn round_div(n: i128, d: i128) -> i128 {
    let q = n / d;
    let r = n % d;
    if 2 * r.abs() >= d {
        q + n.signum()
    } else {
        q
    }
}

fn bn(nanos: i128) -> String {
    let hundredths = round_div(nanos, NANOS_PER_HUNDREDTH_BN);
    let sign = if hundredths < 0 { "-" } else { "" };
    let a = hundredths.abs();
    format!("{sign}{}.{:02} bn", a / 100, a % 100)
}

/// "31.20 bn" (USD, rounded to 10 million).
pub fn usd_bn(m: Option<&pb::Money>) -> String {
    match m {
        Some(m) => bn(i128::from(m.units) * 1_000_000_000 + i128::from(m.nanos)),
        None => "—".into(),
    }
}

/// Whole dollars with thousands separators, "905,700,000" (nanos, if any,
/// after a point); "—" when absent.
pub fn usd_exact(m: Option<&pb::Money>) -> String {
    let Some(m) = m else { return "—".into() };
    let digits = m.units.unsigned_abs().to_string();
    let mut grouped = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            grouped.push(',');
        }
        grouped.push(c);
    }
    let sign = if m.units < 0 || m.nanos < 0 { "-" } else { "" };
    match m.nanos.unsigned_abs() {
        0 => format!("{sign}{grouped}"),
        n => format!("{sign}{grouped}.{:09}", n)
            .trim_end_matches('0')
            .to_owned(),
    }
}

/// A signed amount, "+7.10 bn" or "-0.30 bn".
pub fn signed_bn(m: Option<&pb::SignedMoney>) -> String {
    match m {
        Some(m) => {
            let n = i128::from(m.units) * 1_000_000_000 + i128::from(m.nanos);
            let s = bn(n);
            if n > 0 {
                format!("+{s}")
            } else {
                s
            }
        }
        None => "—".into(),
    }
}

/// "+23.6 %" from hundredths of a percent; "—" when absent.
pub fn percent(p: Option<&pb::Percent>) -> String {
    match p {
        Some(p) => {
            let tenths = round_div(i128::from(p.hundredths), 10);
            let sign = if tenths > 0 {
                "+"
            } else if tenths < 0 {
                "-"
            } else {
                ""
            };
            let a = tenths.abs();
            format!("{sign}{}.{} %", a / 10, a % 10)
        }
        None => "—".into(),
    }
}

/// "2022", "2023-Q1", "2023-03", "2023 Jan–Nov".
pub fn period(p: Option<&pb::Period>) -> String {
    let Some(p) = p else { return "—".into() };
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    match pb::Frequency::try_from(p.frequency) {
        Ok(pb::Frequency::Annual) => p.year.to_string(),
        Ok(pb::Frequency::Quarterly) => format!("{}-Q{}", p.year, p.number),
        Ok(pb::Frequency::Monthly) => format!("{}-{:02}", p.year, p.number),
        Ok(pb::Frequency::YearToDate) => {
            let last = MONTHS
                .get((p.number.max(1) - 1) as usize)
                .copied()
                .unwrap_or("?");
            format!("{} Jan–{last}", p.year)
        }
        _ => format!("{}", p.year),
    }
}

/// A sector's short name.
pub fn sector(raw: i32) -> String {
    crate::convert::sector(raw)
        .map(|s| s.name().to_owned())
        .unwrap_or_else(|_| "?".into())
}

/// A new table in the house style.
pub fn table(header: &[&str]) -> comfy_table::Table {
    let mut t = comfy_table::Table::new();
    t.load_preset(comfy_table::presets::UTF8_FULL_CONDENSED);
    t.set_content_arrangement(comfy_table::ContentArrangement::Dynamic);
    t.set_width(110);
    t.set_header(header.to_vec());
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn money_and_percent_render_exactly() {
        let m = pb::Money {
            currency_code: "USD".into(),
            units: 70_071_660_000,
            nanos: 0,
        };
        assert_eq!(usd_bn(Some(&m)), "70.07 bn");
        assert_eq!(usd_exact(Some(&m)), "70,071,660,000");
        let small = pb::Money {
            currency_code: "USD".into(),
            units: 905,
            nanos: 500_000_000,
        };
        assert_eq!(usd_exact(Some(&small)), "905.5");
        assert_eq!(percent(Some(&pb::Percent { hundredths: 2356 })), "+23.6 %");
        assert_eq!(percent(Some(&pb::Percent { hundredths: -525 })), "-5.3 %");
        assert_eq!(
            signed_bn(Some(&pb::SignedMoney {
                units: -300_000_000,
                nanos: 0
            })),
            "-0.30 bn"
        );
    }
}
