//! Retention and replication rules, in Druid's JSON form. Each datasource has an
//! ordered list at `/grove/rules/{datasource}`, followed by the cluster default at
//! `/grove/rules/_default`; for each segment the first rule that matches decides.

use std::collections::BTreeMap;

use grove_segment::Interval;
pub use grove_segment::period::Period;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::metastore::MetaStore;
use crate::nodes::DEFAULT_TIER;

pub const RULES_PREFIX: &str = "/grove/rules/";
/// The pseudo-datasource whose rules apply after every datasource's own.
pub const DEFAULT_RULES: &str = "_default";

/// Replicas wanted per tier.
pub type TieredReplicants = BTreeMap<String, u32>;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "camelCase", deny_unknown_fields)]
pub enum Rule {
    #[serde(rename_all = "camelCase")]
    LoadForever {
        tiered_replicants: TieredReplicants,
    },
    #[serde(rename_all = "camelCase")]
    LoadByInterval {
        interval: IntervalText,
        tiered_replicants: TieredReplicants,
    },
    #[serde(rename_all = "camelCase")]
    LoadByPeriod {
        period: Period,
        #[serde(default = "yes")]
        include_future: bool,
        tiered_replicants: TieredReplicants,
    },
    DropForever,
    #[serde(rename_all = "camelCase")]
    DropByInterval {
        interval: IntervalText,
    },
    #[serde(rename_all = "camelCase")]
    DropByPeriod {
        period: Period,
        #[serde(default = "yes")]
        include_future: bool,
    },
    #[serde(rename_all = "camelCase")]
    DropBeforeByPeriod {
        period: Period,
    },
    BroadcastForever,
}

fn yes() -> bool {
    true
}

/// What a matching rule asks for a segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision<'a> {
    Load(&'a TieredReplicants),
    Drop,
    /// One replica on every historical.
    Broadcast,
}

impl Rule {
    /// Whether the rule applies to a segment covering `interval`, at `now` (ms).
    /// Periods end at `now`: the period rules match data by its age, as in Druid.
    pub fn applies(&self, interval: &Interval, now: i64) -> bool {
        match self {
            Rule::LoadForever { .. } | Rule::DropForever | Rule::BroadcastForever => true,
            Rule::LoadByInterval { interval: i, .. } => i.0.overlaps(interval),
            Rule::DropByInterval { interval: i } => i.0.covers(interval),
            Rule::LoadByPeriod {
                period,
                include_future,
                ..
            } => {
                let start = period.before(now);
                if *include_future {
                    start < interval.end
                } else {
                    start < interval.end && interval.start < now
                }
            }
            Rule::DropByPeriod {
                period,
                include_future,
            } => {
                let start = period.before(now);
                if *include_future {
                    start <= interval.start
                } else {
                    start <= interval.start && interval.end <= now
                }
            }
            Rule::DropBeforeByPeriod { period } => interval.end <= period.before(now),
        }
    }

    pub fn decision(&self) -> Decision<'_> {
        match self {
            Rule::LoadForever { tiered_replicants }
            | Rule::LoadByInterval {
                tiered_replicants, ..
            }
            | Rule::LoadByPeriod {
                tiered_replicants, ..
            } => Decision::Load(tiered_replicants),
            Rule::DropForever
            | Rule::DropByInterval { .. }
            | Rule::DropByPeriod { .. }
            | Rule::DropBeforeByPeriod { .. } => Decision::Drop,
            Rule::BroadcastForever => Decision::Broadcast,
        }
    }
}

/// What applies when nothing is configured: two replicas in the default tier (Druid's
/// default).
pub fn builtin_default() -> Vec<Rule> {
    vec![Rule::LoadForever {
        tiered_replicants: BTreeMap::from([(DEFAULT_TIER.to_string(), 2)]),
    }]
}

/// Parses a rule list as Druid's API takes it (a JSON array), checking each rule.
pub fn parse(json: &[u8]) -> Result<Vec<Rule>> {
    let rules: Vec<Rule> =
        serde_json::from_slice(json).map_err(|e| Error::Invalid(format!("invalid rules: {e}")))?;
    for rule in &rules {
        if let Decision::Load(tiers) = rule.decision()
            && tiers.is_empty()
        {
            return Err(Error::Invalid(
                "invalid rules: a load rule needs at least one tier in tieredReplicants".into(),
            ));
        }
    }
    Ok(rules)
}

pub fn key(datasource: &str) -> String {
    format!("{RULES_PREFIX}{datasource}")
}

/// Sets a datasource's rules (or, for [`DEFAULT_RULES`], the cluster default).
pub async fn set(store: &dyn MetaStore, datasource: &str, rules: &[Rule]) -> Result<()> {
    check_name(datasource)?;
    let value = serde_json::to_vec(rules).map_err(|e| Error::Store(e.to_string()))?;
    store.put(&key(datasource), value).await?;
    Ok(())
}

/// A datasource's own rules (empty when none are set).
pub async fn get(store: &dyn MetaStore, datasource: &str) -> Result<Vec<Rule>> {
    check_name(datasource)?;
    match store.get(&key(datasource)).await? {
        Some(kv) => parse(&kv.value),
        None if datasource == DEFAULT_RULES => Ok(builtin_default()),
        None => Ok(Vec::new()),
    }
}

/// Every datasource's rules, and the default under [`DEFAULT_RULES`].
pub async fn all(store: &dyn MetaStore) -> Result<BTreeMap<String, Vec<Rule>>> {
    let mut out = BTreeMap::new();
    for kv in store.range(RULES_PREFIX).await? {
        let name = kv.key[RULES_PREFIX.len()..].to_string();
        out.insert(name, parse(&kv.value)?);
    }
    out.entry(DEFAULT_RULES.to_string())
        .or_insert_with(builtin_default);
    Ok(out)
}

/// The rules in force for `datasource`: its own, then the default.
pub fn effective<'a>(all: &'a BTreeMap<String, Vec<Rule>>, datasource: &str) -> Vec<&'a Rule> {
    let own = all.get(datasource).into_iter().flatten();
    let default = all.get(DEFAULT_RULES).into_iter().flatten();
    if datasource == DEFAULT_RULES {
        return default.collect();
    }
    own.chain(default).collect()
}

fn check_name(datasource: &str) -> Result<()> {
    if datasource.is_empty() || datasource.contains('/') {
        return Err(Error::Invalid(format!(
            "{datasource:?} is not a datasource name"
        )));
    }
    Ok(())
}

/// An interval in Druid's `start/end` text form.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IntervalText(pub Interval);

impl Serialize for IntervalText {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(&self.0.to_string())
    }
}

impl<'de> Deserialize<'de> for IntervalText {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        Interval::parse(&text)
            .map(IntervalText)
            .map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use grove_segment::id::parse_instant;

    fn at(text: &str) -> i64 {
        parse_instant(text).unwrap()
    }

    fn interval(text: &str) -> Interval {
        Interval::parse(text).unwrap()
    }

    #[test]
    fn periods_parse_and_subtract_calendar_months() {
        let p = Period::parse("P1M").unwrap();
        assert_eq!(
            p.before(at("2024-03-31T00:00:00Z")),
            at("2024-02-29T00:00:00Z")
        );
        let p = Period::parse("P1Y2M3DT4H5M6S").unwrap();
        assert_eq!(p.to_string(), "P1Y2M3DT4H5M6S");
        assert_eq!(
            p.before(at("2025-06-10T12:00:00Z")),
            at("2024-04-07T07:54:54Z")
        );
        assert_eq!(Period::parse("P2W").unwrap().millis, 14 * 86_400_000);
        for bad in ["", "1D", "P", "PT", "PD", "P1X", "P1H", "PT1D", "P1"] {
            assert!(Period::parse(bad).is_err(), "{bad:?} must be refused");
        }
    }

    #[test]
    fn rules_parse_from_druid_json_and_refuse_unknown_fields() {
        let rules = parse(
            br#"[
              {"type":"loadByPeriod","period":"P1M","tieredReplicants":{"hot":2,"_default_tier":1}},
              {"type":"loadByInterval","interval":"2024-01-01/2024-02-01","tieredReplicants":{"_default_tier":1}},
              {"type":"dropByPeriod","period":"P1D","includeFuture":false},
              {"type":"dropBeforeByPeriod","period":"P1Y"},
              {"type":"dropByInterval","interval":"2020-01-01/2021-01-01"},
              {"type":"broadcastForever"},
              {"type":"dropForever"}
            ]"#,
        )
        .unwrap();
        assert_eq!(rules.len(), 7);
        let again = parse(&serde_json::to_vec(&rules).unwrap()).unwrap();
        assert_eq!(again, rules, "rules round-trip through their JSON form");
        let err = parse(br#"[{"type":"loadForever","tieredReplicants":{},"x":1}]"#).unwrap_err();
        assert!(err.to_string().contains("unknown field `x`"), "{err}");
        let err = parse(br#"[{"type":"loadForever","tieredReplicants":{}}]"#).unwrap_err();
        assert!(err.to_string().contains("at least one tier"), "{err}");
        let err = parse(br#"[{"type":"keepSome"}]"#).unwrap_err();
        assert!(err.to_string().contains("keepSome"), "{err}");
    }

    #[test]
    fn period_rules_match_by_age_as_druid_does() {
        let now = at("2024-06-10T00:00:00Z");
        let recent = interval("2024-06-09/2024-06-10");
        let old = interval("2024-01-01/2024-01-02");
        let future = interval("2024-06-11/2024-06-12");
        let p = Period::parse("P7D").unwrap();
        let load = |include_future| Rule::LoadByPeriod {
            period: p,
            include_future,
            tiered_replicants: TieredReplicants::new(),
        };
        assert!(load(true).applies(&recent, now));
        assert!(!load(true).applies(&old, now));
        assert!(load(true).applies(&future, now));
        assert!(!load(false).applies(&future, now));
        let drop_recent = Rule::DropByPeriod {
            period: p,
            include_future: false,
        };
        assert!(drop_recent.applies(&recent, now));
        assert!(!drop_recent.applies(&old, now));
        let drop_old = Rule::DropBeforeByPeriod { period: p };
        assert!(drop_old.applies(&old, now));
        assert!(!drop_old.applies(&recent, now));
        // A segment straddling the boundary is not "before" it.
        assert!(!drop_old.applies(&interval("2024-06-02/2024-06-04"), now));
    }

    #[test]
    fn interval_rules_load_on_overlap_and_drop_on_containment() {
        let rule_interval = IntervalText(interval("2024-01-01/2024-02-01"));
        let load = Rule::LoadByInterval {
            interval: rule_interval,
            tiered_replicants: TieredReplicants::new(),
        };
        let drop = Rule::DropByInterval {
            interval: rule_interval,
        };
        let inside = interval("2024-01-05/2024-01-06");
        let straddling = interval("2024-01-31/2024-02-02");
        assert!(load.applies(&inside, 0) && load.applies(&straddling, 0));
        assert!(drop.applies(&inside, 0) && !drop.applies(&straddling, 0));
    }
}
