//! Per-provider health for `/health` and the logs: green (syncing), yellow
//! (retrying after a transient error), red (stopped on a permanent error).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Light {
    Green,
    Yellow,
    Red,
}

#[derive(Debug, Clone, Serialize)]
pub struct TaskHealth {
    pub light: Light,
    pub detail: Option<String>,
}

#[derive(Debug, Clone, Default)]
pub struct Health {
    inner: Arc<Mutex<BTreeMap<String, BTreeMap<&'static str, TaskHealth>>>>,
}

/// The light as [`connector_core::metrics::PROVIDER_HEALTH`].
fn export(provider: &str, task: &'static str, light: Light) {
    let value = match light {
        Light::Green => 0.0,
        Light::Yellow => 1.0,
        Light::Red => 2.0,
    };
    metrics::gauge!(connector_core::metrics::PROVIDER_HEALTH, "provider" => provider.to_string(), "task" => task)
        .set(value);
}

impl Health {
    pub fn set(&self, provider: &str, task: &'static str, light: Light, detail: Option<String>) {
        export(provider, task, light);
        let mut map = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        map.entry(provider.to_string())
            .or_default()
            .insert(task, TaskHealth { light, detail });
    }

    /// Sets a task's light and detail unless they are already these;
    /// returns whether they changed (for logging a state once).
    pub fn set_once(&self, provider: &str, task: &'static str, light: Light, detail: &str) -> bool {
        let mut map = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let tasks = map.entry(provider.to_string()).or_default();
        let same = tasks
            .get(task)
            .is_some_and(|t| t.light == light && t.detail.as_deref() == Some(detail));
        if !same {
            export(provider, task, light);
            tasks.insert(
                task,
                TaskHealth {
                    light,
                    detail: Some(detail.to_string()),
                },
            );
        }
        !same
    }

    /// Each provider's worst task light, with the task details.
    pub fn snapshot(&self) -> BTreeMap<String, (Light, BTreeMap<&'static str, TaskHealth>)> {
        let map = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        map.iter()
            .map(|(p, tasks)| {
                let worst = tasks
                    .values()
                    .map(|t| t.light)
                    .max_by_key(|l| match l {
                        Light::Green => 0,
                        Light::Yellow => 1,
                        Light::Red => 2,
                    })
                    .unwrap_or(Light::Green);
                (p.clone(), (worst, tasks.clone()))
            })
            .collect()
    }

    /// Whether every provider has stopped for good.
    pub fn all_red(&self) -> bool {
        let snap = self.snapshot();
        !snap.is_empty() && snap.values().all(|(l, _)| *l == Light::Red)
    }
}
