//! Reading the proxy's `/metrics` in tests: the Prometheus text format parsed by
//! `prometheus-parse`, one series named the way it is written (`name` or `name{label="v",...}`).

/// The value of the series `series` in the Prometheus text `text`: `name` alone matches the
/// first sample of that name, `name{a="x"}` the first whose labels include those given.
pub fn value(text: &str, series: &str) -> Option<f64> {
    values(text, series).first().copied()
}

/// The values of every sample that `series` matches (as in [`value`]), in the order written.
pub fn values(text: &str, series: &str) -> Vec<f64> {
    let (name, want) = split_series(series);
    let Ok(scrape) = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_string()))) else {
        return Vec::new();
    };
    scrape
        .samples
        .iter()
        .filter(|s| s.metric == name && want.iter().all(|(k, v)| s.labels.get(k) == Some(v.as_str())))
        .map(|s| match s.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => v,
            prometheus_parse::Value::Histogram(_) | prometheus_parse::Value::Summary(_) => f64::NAN,
        })
        .collect()
}

/// The sum of every sample that `series` matches (0 when none does): a metric over all workers.
pub fn sum(text: &str, series: &str) -> f64 {
    values(text, series).iter().sum()
}

/// `name{a="x",b="y"}` -> (`name`, [(a, x), (b, y)]).
fn split_series(series: &str) -> (&str, Vec<(String, String)>) {
    let Some((name, rest)) = series.split_once('{') else {
        return (series, Vec::new());
    };
    let labels = rest
        .trim_end_matches('}')
        .split(',')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.trim().to_string(), v.trim().trim_matches('"').to_string()))
        .collect();
    (name, labels)
}

#[cfg(test)]
mod tests {
    #[test]
    fn series_by_name_and_labels() {
        let text = "# TYPE a_total counter\na_total{worker=\"0\"} 3\na_total{worker=\"1\"} 4\n# TYPE g gauge\ng 2.5\n";
        assert_eq!(super::value(text, "a_total{worker=\"1\"}"), Some(4.0));
        assert_eq!(super::value(text, "a_total"), Some(3.0));
        assert_eq!(super::value(text, "g"), Some(2.5));
        assert_eq!(super::value(text, "a_total{worker=\"2\"}"), None);
        assert_eq!(super::value(text, "missing"), None);
        assert_eq!(super::values(text, "a_total"), [3.0, 4.0]);
        assert_eq!(super::sum(text, "a_total"), 7.0);
        assert_eq!(super::sum(text, "missing"), 0.0);
    }
}
