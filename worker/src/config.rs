//! Configuration from environment variables (and an optional `.env` file).
//!
//! The provider variables are the ones existing deployments already use
//! (`DITTO_SYNC_POSTGRES=true`, `POSTGRES_CONNECTION_STRING=…`, …): each
//! enables one provider instance named after its kind. More instances of
//! any kind are declared with `CONNECTOR_PROVIDERS=hq=postgres,shop=postgres`
//! and configured with `CONNECTOR_<NAME>_CONNECTION_STRING` and friends.
//! Everything is validated up front; an error names the variable.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use connector_core::provider::valid_provider_name;
use connector_core::{ProviderKind, ProviderSpec};

/// Reads a variable; a test passes its own map instead of the process env.
pub trait Env {
    fn get(&self, key: &str) -> Option<String>;
}

/// The process environment.
pub struct ProcessEnv;

impl Env for ProcessEnv {
    fn get(&self, key: &str) -> Option<String> {
        std::env::var(key).ok().filter(|v| !v.trim().is_empty())
    }
}

impl Env for BTreeMap<String, String> {
    fn get(&self, key: &str) -> Option<String> {
        BTreeMap::get(self, key)
            .cloned()
            .filter(|v| !v.trim().is_empty())
    }
}

#[derive(Debug, Clone)]
pub struct Config {
    pub store_path: PathBuf,
    pub mappings: Vec<PathBuf>,
    pub providers: Vec<ProviderSpec>,
    /// `DITTO_CLOUD_SYNC_INTERVAL`: the longest a batch waits to fill, and
    /// the poll interval of polling sources.
    pub sync_interval: Duration,
    /// `DITTO_CLOUD_SYNC_BATCH_SIZE`: changes per store transaction / sink batch.
    pub batch_size: usize,
    pub debug: bool,
    /// `CONNECTOR_HTTP_ADDR`: where `/metrics` and `/health` listen.
    pub http_addr: Option<String>,
    /// `CONNECTOR_INITIAL_SYNC=auto|never`: `run` copies existing rows of a
    /// provider that never streamed before it starts streaming.
    pub auto_initial_sync: bool,
    /// `CONNECTOR_COMPACT_EVERY_MS`: how often the change log is compacted.
    pub compact_every: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("configuration: {0}")]
pub struct ConfigError(pub String);

/// The legacy per-kind variables: (kind, instance name, enable flag,
/// connection string, database, schema, extra options).
struct Legacy {
    kind: ProviderKind,
    name: &'static str,
    flag: &'static str,
    conn: &'static str,
    database: Option<&'static str>,
    schema: Option<&'static str>,
    options: &'static [(&'static str, &'static str)],
}

const LEGACY: &[Legacy] = &[
    Legacy {
        kind: ProviderKind::Postgres,
        name: "postgres",
        flag: "DITTO_SYNC_POSTGRES",
        conn: "POSTGRES_CONNECTION_STRING",
        database: None,
        schema: None,
        options: &[],
    },
    Legacy {
        kind: ProviderKind::MongoDb,
        name: "mongodb",
        flag: "DITTO_SYNC_MONGODB",
        conn: "MONGODB_CONNECTION_STRING",
        database: Some("MONGODB_DATABASE"),
        schema: None,
        options: &[],
    },
    Legacy {
        kind: ProviderKind::CosmosDb,
        name: "cosmosdb",
        flag: "DITTO_SYNC_COSMOSDB",
        conn: "COSMOSDB_CONNECTION_STRING",
        database: Some("COSMOSDB_DATABASE_NAME"),
        schema: None,
        options: &[],
    },
    Legacy {
        kind: ProviderKind::SqlServer,
        name: "sqlserver",
        flag: "DITTO_SYNC_SQLSERVER",
        conn: "SQLSERVER_CONNECTION_STRING",
        database: None,
        schema: Some("SQLSERVER_SCHEMA"),
        options: &[],
    },
    Legacy {
        kind: ProviderKind::Odbc,
        name: "ibmcloud",
        flag: "DITTO_SYNC_IBMCLOUD",
        conn: "IBMCLOUD_CONNECTION_STRING",
        database: None,
        schema: None,
        options: &[("dialect", "db2")],
    },
];

pub const DEFAULT_STORE: &str = "./data/store.db";
pub const DEFAULT_MAPPINGS: &str = "./mappings";
pub const DEFAULT_INTERVAL_MS: u64 = 1000;
pub const DEFAULT_BATCH_SIZE: usize = 1000;

fn parse_bool(env: &dyn Env, key: &str, default: bool) -> Result<bool, ConfigError> {
    match env.get(key) {
        None => Ok(default),
        Some(v) => match v.trim().to_ascii_lowercase().as_str() {
            "1" | "true" | "yes" | "on" => Ok(true),
            "0" | "false" | "no" | "off" => Ok(false),
            other => Err(ConfigError(format!(
                "{key}={other} is not a boolean (use true or false)"
            ))),
        },
    }
}

fn parse_number<T>(env: &dyn Env, key: &str, default: T, min: T) -> Result<T, ConfigError>
where
    T: std::str::FromStr + PartialOrd + std::fmt::Display,
{
    match env.get(key) {
        None => Ok(default),
        Some(v) => match v.trim().parse::<T>() {
            Ok(n) if n >= min => Ok(n),
            _ => Err(ConfigError(format!(
                "{key}={v} must be a whole number of at least {min}"
            ))),
        },
    }
}

/// The variable prefix of a named instance: `shop-eu` → `CONNECTOR_SHOP_EU_`.
pub fn instance_prefix(name: &str) -> String {
    format!("CONNECTOR_{}_", name.to_ascii_uppercase().replace('-', "_"))
}

fn parse_options(key: &str, text: &str) -> Result<BTreeMap<String, String>, ConfigError> {
    let mut out = BTreeMap::new();
    for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (k, v) = part
            .split_once('=')
            .ok_or_else(|| ConfigError(format!("{key}: `{part}` is not key=value")))?;
        out.insert(k.trim().to_string(), v.trim().to_string());
    }
    Ok(out)
}

impl Config {
    pub fn from_env(env: &dyn Env) -> Result<Config, ConfigError> {
        let mut providers: Vec<ProviderSpec> = Vec::new();
        for l in LEGACY {
            let enabled = parse_bool(env, l.flag, false)?;
            let conn = env.get(l.conn);
            if !enabled && conn.is_none() {
                continue;
            }
            let Some(connection_string) = conn else {
                return Err(ConfigError(format!(
                    "{}=true but {} is not set",
                    l.flag, l.conn
                )));
            };
            // Its own options come from CONNECTOR_<NAME>_OPTIONS too (the
            // advice for a lost slot names that variable), over the kind's.
            let mut options: BTreeMap<String, String> = l
                .options
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            let options_key = format!("{}OPTIONS", instance_prefix(l.name));
            if let Some(text) = env.get(&options_key) {
                options.extend(parse_options(&options_key, &text)?);
            }
            providers.push(ProviderSpec {
                name: l.name.to_string(),
                kind: l.kind,
                enabled,
                connection_string,
                database: l.database.and_then(|k| env.get(k)),
                schema: l.schema.and_then(|k| env.get(k)),
                options,
            });
        }
        if let Some(list) = env.get("CONNECTOR_PROVIDERS") {
            for item in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
                let (name, kind) = item.split_once('=').ok_or_else(|| {
                    ConfigError(format!(
                        "CONNECTOR_PROVIDERS: `{item}` must be name=kind, e.g. hq=postgres"
                    ))
                })?;
                let (name, kind) = (name.trim(), kind.trim());
                if !valid_provider_name(name) {
                    return Err(ConfigError(format!(
                        "CONNECTOR_PROVIDERS: `{name}` is not a valid provider name (lowercase letters, digits, `_`, `-`; starting with a letter)"
                    )));
                }
                let kind: ProviderKind = kind
                    .parse()
                    .map_err(|e| ConfigError(format!("CONNECTOR_PROVIDERS: {e}")))?;
                if providers.iter().any(|p| p.name == name) {
                    return Err(ConfigError(format!(
                        "CONNECTOR_PROVIDERS: provider `{name}` is defined twice"
                    )));
                }
                if let Some(p) = providers
                    .iter()
                    .find(|p| instance_prefix(&p.name) == instance_prefix(name))
                {
                    return Err(ConfigError(format!(
                        "CONNECTOR_PROVIDERS: providers `{}` and `{name}` would both read {}*: rename one",
                        p.name,
                        instance_prefix(name)
                    )));
                }
                let prefix = instance_prefix(name);
                let conn_key = format!("{prefix}CONNECTION_STRING");
                let connection_string = env.get(&conn_key).ok_or_else(|| {
                    ConfigError(format!("provider `{name}`: {conn_key} is not set"))
                })?;
                let options_key = format!("{prefix}OPTIONS");
                let options = match env.get(&options_key) {
                    Some(text) => parse_options(&options_key, &text)?,
                    None => BTreeMap::new(),
                };
                providers.push(ProviderSpec {
                    name: name.to_string(),
                    kind,
                    enabled: parse_bool(env, &format!("{prefix}ENABLED"), true)?,
                    connection_string,
                    database: env.get(&format!("{prefix}DATABASE")),
                    schema: env.get(&format!("{prefix}SCHEMA")),
                    options,
                });
            }
        }
        let interval_ms: u64 =
            parse_number(env, "DITTO_CLOUD_SYNC_INTERVAL", DEFAULT_INTERVAL_MS, 1)?;
        Ok(Config {
            store_path: env
                .get("CONNECTOR_STORE")
                .unwrap_or_else(|| DEFAULT_STORE.into())
                .into(),
            mappings: env
                .get("CONNECTOR_MAPPINGS")
                .unwrap_or_else(|| DEFAULT_MAPPINGS.into())
                .split(',')
                .map(|p| PathBuf::from(p.trim()))
                .collect(),
            providers,
            sync_interval: Duration::from_millis(interval_ms),
            batch_size: parse_number(env, "DITTO_CLOUD_SYNC_BATCH_SIZE", DEFAULT_BATCH_SIZE, 1)?,
            debug: parse_bool(env, "DEBUG_DITTO_SYNC", false)?,
            http_addr: match env.get("CONNECTOR_HTTP_ADDR") {
                Some(a)
                    if !a
                        .rsplit_once(':')
                        .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok()) =>
                {
                    return Err(ConfigError(format!(
                        "CONNECTOR_HTTP_ADDR={a}: expected host:port, e.g. 127.0.0.1:9187"
                    )))
                }
                other => other,
            },
            compact_every: Duration::from_millis(parse_number(
                env,
                "CONNECTOR_COMPACT_EVERY_MS",
                30_000,
                100,
            )?),
            auto_initial_sync: match env.get("CONNECTOR_INITIAL_SYNC").as_deref() {
                None | Some("auto") => true,
                Some("never") => false,
                Some(other) => {
                    return Err(ConfigError(format!(
                        "CONNECTOR_INITIAL_SYNC={other}: expected auto or never"
                    )))
                }
            },
        })
    }

    pub fn provider(&self, name: &str) -> Option<&ProviderSpec> {
        self.providers.iter().find(|p| p.name == name)
    }

    /// The providers a command acts on: the named one (enabled or not), or
    /// every enabled one.
    pub fn selected(&self, name: Option<&str>) -> Result<Vec<&ProviderSpec>, ConfigError> {
        match name {
            Some(n) => self.provider(n).map(|p| vec![p]).ok_or_else(|| {
                let known: Vec<&str> = self.providers.iter().map(|p| p.name.as_str()).collect();
                ConfigError(format!(
                    "no provider named `{n}` is configured (configured: {})",
                    if known.is_empty() {
                        "none".to_string()
                    } else {
                        known.join(", ")
                    }
                ))
            }),
            None => Ok(self.providers.iter().filter(|p| p.enabled).collect()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn defaults_with_an_empty_environment() {
        let c = Config::from_env(&env(&[])).unwrap();
        assert!(c.providers.is_empty());
        assert_eq!(c.store_path, PathBuf::from(DEFAULT_STORE));
        assert_eq!(c.sync_interval, Duration::from_millis(1000));
        assert_eq!(c.batch_size, 1000);
        assert!(!c.debug);
    }

    #[test]
    fn legacy_variables_enable_one_provider_per_kind() {
        let c = Config::from_env(&env(&[
            ("DITTO_SYNC_POSTGRES", "true"),
            ("POSTGRES_CONNECTION_STRING", "postgres://u:p@h/db"),
            ("DITTO_SYNC_IBMCLOUD", "TRUE"),
            (
                "IBMCLOUD_CONNECTION_STRING",
                "Driver={IBM DB2 ODBC DRIVER};Pwd=x;",
            ),
            ("SQLSERVER_CONNECTION_STRING", "Server=h;Password=x;"),
            ("SQLSERVER_SCHEMA", "sales"),
            ("DITTO_CLOUD_SYNC_INTERVAL", "250"),
            ("DITTO_CLOUD_SYNC_BATCH_SIZE", "50"),
            ("DEBUG_DITTO_SYNC", "1"),
            ("CONNECTOR_POSTGRES_OPTIONS", "on_slot_lost=resnapshot"),
            ("CONNECTOR_IBMCLOUD_OPTIONS", "call_timeout_s=30"),
        ]))
        .unwrap();
        assert_eq!(
            c.provider("postgres").unwrap().options["on_slot_lost"],
            "resnapshot"
        );
        assert_eq!(
            c.provider("ibmcloud").unwrap().options["call_timeout_s"],
            "30"
        );
        let names: Vec<_> = c
            .providers
            .iter()
            .map(|p| (p.name.as_str(), p.kind, p.enabled))
            .collect();
        assert_eq!(
            names,
            vec![
                ("postgres", ProviderKind::Postgres, true),
                ("sqlserver", ProviderKind::SqlServer, false),
                ("ibmcloud", ProviderKind::Odbc, true)
            ]
        );
        assert_eq!(c.provider("ibmcloud").unwrap().options["dialect"], "db2");
        assert_eq!(
            c.provider("sqlserver").unwrap().schema.as_deref(),
            Some("sales")
        );
        assert_eq!(c.sync_interval, Duration::from_millis(250));
        assert_eq!(c.batch_size, 50);
        assert!(c.debug);
        assert_eq!(c.selected(None).unwrap().len(), 2);
    }

    #[test]
    fn several_instances_of_one_kind() {
        let c = Config::from_env(&env(&[
            ("CONNECTOR_PROVIDERS", "hq=postgres, shop-eu=postgres"),
            ("CONNECTOR_HQ_CONNECTION_STRING", "postgres://h/hq"),
            ("CONNECTOR_SHOP_EU_CONNECTION_STRING", "postgres://h/shop"),
            ("CONNECTOR_SHOP_EU_ENABLED", "false"),
            (
                "CONNECTOR_SHOP_EU_OPTIONS",
                "slot=shop_slot, publication=shop_pub",
            ),
        ]))
        .unwrap();
        assert_eq!(c.providers.len(), 2);
        let shop = c.provider("shop-eu").unwrap();
        assert!(!shop.enabled);
        assert_eq!(shop.options["slot"], "shop_slot");
        assert_eq!(c.selected(None).unwrap().len(), 1);
        assert_eq!(c.selected(Some("shop-eu")).unwrap()[0].name, "shop-eu");
        assert!(c
            .selected(Some("nope"))
            .unwrap_err()
            .0
            .contains("configured: hq, shop-eu"));
    }

    #[test]
    fn mistakes_name_the_variable() {
        let cases: &[(&[(&str, &str)], &str)] = &[
            (
                &[("DITTO_SYNC_POSTGRES", "true")],
                "POSTGRES_CONNECTION_STRING is not set",
            ),
            (
                &[("DITTO_SYNC_MONGODB", "sometimes")],
                "DITTO_SYNC_MONGODB=sometimes is not a boolean",
            ),
            (
                &[("DITTO_CLOUD_SYNC_BATCH_SIZE", "0")],
                "DITTO_CLOUD_SYNC_BATCH_SIZE=0",
            ),
            (&[("CONNECTOR_PROVIDERS", "hq")], "must be name=kind"),
            (
                &[("CONNECTOR_PROVIDERS", "hq=oracle")],
                "unknown provider kind `oracle`",
            ),
            (
                &[("CONNECTOR_PROVIDERS", "HQ=postgres")],
                "not a valid provider name",
            ),
            (
                &[("CONNECTOR_PROVIDERS", "hq=postgres")],
                "CONNECTOR_HQ_CONNECTION_STRING is not set",
            ),
            (
                &[
                    ("CONNECTOR_PROVIDERS", "shop-eu=postgres,shop_eu=postgres"),
                    ("CONNECTOR_SHOP_EU_CONNECTION_STRING", "postgres://x/y"),
                ],
                "providers `shop-eu` and `shop_eu` would both read CONNECTOR_SHOP_EU_*",
            ),
        ];
        for (vars, want) in cases {
            let err = Config::from_env(&env(vars)).unwrap_err();
            assert!(err.0.contains(want), "{vars:?}: {err}");
        }
    }
}
