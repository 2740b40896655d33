//! `health` tables: active health checks (TCP connect or HTTP request), shared by L4 services
//! and anything else that checks backends.

use super::model::{Choice, HealthCheckConfig, HealthKind, HttpCheck};
use super::reader::Table;
use super::report::Report;
use super::rules;

impl Choice for HealthKind {
    const CHOICES: &'static [(&'static str, Self)] =
        &[("tcp", HealthKind::Tcp), ("http", HealthKind::Http)];
}

const HTTP_ONLY: [&str; 4] = ["method", "path", "host", "expect_status"];

/// Reads a health table; `service_port` 0 means the service has no single port, so the check
/// must name one.
pub(super) fn health(
    report: &mut Report<'_>,
    table: &Table<'_, '_>,
    service_port: Option<u16>,
) -> Option<HealthCheckConfig> {
    table.deny_unknown(
        report,
        &[
            "kind",
            "port",
            "interval_ms",
            "timeout_ms",
            "rise",
            "fall",
            "method",
            "path",
            "host",
            "expect_status",
        ],
    );
    let d = HealthCheckConfig::default();
    let kind = match table.optional_str(report, "kind") {
        Some(v) => rules::choice(report, v),
        None => Some(d.kind),
    };
    let port = match table.optional_int(report, "port") {
        Some(v) => rules::in_range::<u16>(report, v, 1..=i128::from(u16::MAX)).map(Some),
        None => {
            if service_port == Some(0) {
                report.add(
                    table.offset(),
                    table.key_path("port"),
                    "missing key \"port\": the service covers every port, so the check must name one",
                );
                None
            } else {
                Some(None)
            }
        }
    };
    let ms =
        |report: &mut Report<'_>, key: &str, default: u32| match table.optional_int(report, key) {
            Some(v) => rules::in_range::<u32>(report, v, 10..=3_600_000),
            None => Some(default),
        };
    let interval_ms = ms(report, "interval_ms", d.interval_ms);
    let timeout_ms = ms(report, "timeout_ms", d.timeout_ms);
    let count =
        |report: &mut Report<'_>, key: &str, default: u32| match table.optional_int(report, key) {
            Some(v) => rules::in_range::<u32>(report, v, 1..=100),
            None => Some(default),
        };
    let rise = count(report, "rise", d.rise);
    let fall = count(report, "fall", d.fall);
    if let (Some(i), Some(t)) = (interval_ms, timeout_ms)
        && t > i
    {
        report.add(
            table.offset(),
            table.key_path("timeout_ms"),
            format!("timeout_ms {t} is longer than interval_ms {i}: checks would overlap"),
        );
    }

    let http = match kind {
        Some(HealthKind::Http) => {
            let hd = HttpCheck::default();
            let method =
                table
                    .optional_str(report, "method")
                    .map_or(Some(hd.method.clone()), |v| {
                        let ok =
                            !v.value.is_empty() && v.value.bytes().all(|b| b.is_ascii_uppercase());
                        if !ok {
                            report.add(
                                v.offset,
                                v.key,
                                format!("\"{}\" is not an HTTP method", v.value),
                            );
                        }
                        ok.then(|| v.value.to_string())
                    });
            let path = table
                .optional_str(report, "path")
                .map_or(Some(hd.path.clone()), |v| {
                    let ok = v.value.starts_with('/')
                        && !v.value.bytes().any(|b| b <= b' ' || b == 0x7f);
                    if !ok {
                        report.add(
                            v.offset,
                            v.key,
                            format!(
                                "\"{}\" is not a request path (starts with /, no spaces)",
                                v.value
                            ),
                        );
                    }
                    ok.then(|| v.value.to_string())
                });
            let host = match table.optional_str(report, "host") {
                Some(v) => {
                    let ok =
                        !v.value.is_empty() && !v.value.bytes().any(|b| b <= b' ' || b == 0x7f);
                    if !ok {
                        report.add(
                            v.offset,
                            v.key,
                            format!("\"{}\" is not a host name", v.value),
                        );
                    }
                    ok.then(|| Some(v.value.to_string()))
                }
                None => Some(None),
            };
            let expect_status = match table.optional_int(report, "expect_status") {
                Some(v) => rules::in_range::<u16>(report, v, 100..=599),
                None => Some(hd.expect_status),
            };
            Some(Some(HttpCheck {
                method: method?,
                path: path?,
                host: host?,
                expect_status: expect_status?,
            }))
        }
        Some(HealthKind::Tcp) => {
            for key in HTTP_ONLY {
                if table.has(key) {
                    report.add(
                        table.offset(),
                        table.key_path(key),
                        format!("\"{key}\" only applies to kind = \"http\""),
                    );
                }
            }
            Some(None)
        }
        None => None,
    };
    Some(HealthCheckConfig {
        kind: kind?,
        port: port?,
        interval_ms: interval_ms?,
        timeout_ms: timeout_ms?,
        rise: rise?,
        fall: fall?,
        http: http?,
    })
}
