//! Typed calls on one Proxmox VE VM (`/nodes/{node}/qemu/{vmid}/...`) and
//! the cluster calls the backend needs. Calls that start a task return its
//! [`Upid`]; [`super::tasks::wait`] follows it.

use std::collections::BTreeMap;

use serde_json::Value;

use super::client::{PveClient, encode_component};
use super::error::PveError;
use super::tasks::Upid;

/// One VM on one node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmRef {
    pub node: String,
    pub vmid: u32,
}

/// `GET status/current`, the parts smoke uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CurrentStatus {
    /// `running` or `stopped`.
    pub status: String,
    /// QEMU's own state when running (`running`, `paused`, `prelaunch`, ...).
    pub qmpstatus: Option<String>,
    pub name: Option<String>,
    /// A config lock (`backup`, `snapshot`, `clone`, ...).
    pub lock: Option<String>,
}

/// One entry of `GET snapshot` (the `current` pseudo-entry excluded).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotEntry {
    pub name: String,
    pub description: String,
    pub snaptime: Option<i64>,
    pub vmstate: bool,
    pub parent: Option<String>,
}

fn bool_param(b: bool) -> String {
    if b { "1".into() } else { "0".into() }
}

/// A config value as text (PVE answers numbers for some keys, strings for most).
pub fn value_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Bool(b) => bool_param(*b),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

impl VmRef {
    pub fn new(node: impl Into<String>, vmid: u32) -> VmRef {
        VmRef { node: node.into(), vmid }
    }

    /// `/nodes/{node}/qemu/{vmid}{rest}`.
    pub fn path(&self, rest: &str) -> String {
        format!("/nodes/{}/qemu/{}{rest}", encode_component(&self.node), self.vmid)
    }

    fn upid(&self, data: Value, what: &str) -> Result<Upid, PveError> {
        Upid::from_data(&data, &format!("{what} of VM {}", self.vmid))
    }

    pub async fn status(&self, c: &PveClient) -> Result<CurrentStatus, PveError> {
        let d = c.get(&self.path("/status/current"), &[]).await?;
        let text = |k: &str| d.get(k).and_then(Value::as_str).map(str::to_string);
        Ok(CurrentStatus {
            status: text("status").ok_or_else(|| PveError::Decode {
                what: format!("status of VM {}", self.vmid),
                detail: "no 'status' field".into(),
            })?,
            qmpstatus: text("qmpstatus"),
            name: text("name"),
            lock: text("lock"),
        })
    }

    pub async fn start(&self, c: &PveClient) -> Result<Upid, PveError> {
        let d = c.post(&self.path("/status/start"), &[]).await?;
        self.upid(d, "start")
    }

    /// Hard stop ("pulling the plug").
    pub async fn stop(&self, c: &PveClient) -> Result<Upid, PveError> {
        let d = c.post(&self.path("/status/stop"), &[]).await?;
        self.upid(d, "stop")
    }

    /// ACPI shutdown; the task fails after `timeout_secs` unless `force_stop`.
    pub async fn shutdown(&self, c: &PveClient, timeout_secs: u64, force_stop: bool) -> Result<Upid, PveError> {
        let form = [("timeout", timeout_secs.to_string()), ("forceStop", bool_param(force_stop))];
        let d = c.post(&self.path("/status/shutdown"), &form).await?;
        self.upid(d, "shutdown")
    }

    pub async fn reset(&self, c: &PveClient) -> Result<Upid, PveError> {
        let d = c.post(&self.path("/status/reset"), &[]).await?;
        self.upid(d, "reset")
    }

    /// `GET config`: every key as text (`digest` included).
    pub async fn config(&self, c: &PveClient) -> Result<BTreeMap<String, String>, PveError> {
        let d = c.get(&self.path("/config"), &[]).await?;
        let obj = d.as_object().ok_or_else(|| PveError::Decode {
            what: format!("config of VM {}", self.vmid),
            detail: "not an object".into(),
        })?;
        Ok(obj.iter().map(|(k, v)| (k.clone(), value_text(v))).collect())
    }

    /// `PUT config`: change settings synchronously.
    pub async fn set_config(&self, c: &PveClient, params: &[(&str, String)]) -> Result<(), PveError> {
        c.put(&self.path("/config"), params).await.map(|_| ())
    }

    /// `POST config`: change settings as a task (returns its UPID; PVE
    /// answers null when there was nothing to do).
    pub async fn set_config_async(&self, c: &PveClient, params: &[(&str, String)]) -> Result<Option<Upid>, PveError> {
        let d = c.post(&self.path("/config"), params).await?;
        if d.is_null() { Ok(None) } else { self.upid(d, "config update").map(Some) }
    }

    /// `POST snapshot`; `vmstate` saves RAM and devices too (the screen comes back on rollback).
    pub async fn snapshot_create(
        &self,
        c: &PveClient,
        name: &str,
        vmstate: bool,
        description: &str,
    ) -> Result<Upid, PveError> {
        let mut form = vec![("snapname", name.to_string()), ("vmstate", bool_param(vmstate))];
        if !description.is_empty() {
            form.push(("description", description.to_string()));
        }
        let d = c.post(&self.path("/snapshot"), &form).await?;
        self.upid(d, "snapshot")
    }

    /// `POST snapshot/{name}/rollback`; `start` starts a VM whose snapshot has no RAM.
    pub async fn snapshot_rollback(&self, c: &PveClient, name: &str, start: bool) -> Result<Upid, PveError> {
        let path = self.path(&format!("/snapshot/{}/rollback", encode_component(name)));
        let form: Vec<(&str, String)> = if start { vec![("start", "1".into())] } else { Vec::new() };
        let d = c.post(&path, &form).await?;
        self.upid(d, "rollback")
    }

    /// `DELETE snapshot/{name}`.
    pub async fn snapshot_delete(&self, c: &PveClient, name: &str) -> Result<Upid, PveError> {
        let d = c.delete(&self.path(&format!("/snapshot/{}", encode_component(name))), &[]).await?;
        self.upid(d, "snapshot delete")
    }

    /// `GET snapshot`, without the `current` entry.
    pub async fn snapshots(&self, c: &PveClient) -> Result<Vec<SnapshotEntry>, PveError> {
        let d = c.get(&self.path("/snapshot"), &[]).await?;
        let items = d.as_array().ok_or_else(|| PveError::Decode {
            what: format!("snapshots of VM {}", self.vmid),
            detail: "not a list".into(),
        })?;
        let mut out: Vec<SnapshotEntry> = items
            .iter()
            .filter_map(|i| {
                let name = i.get("name")?.as_str()?.to_string();
                (name != "current").then(|| SnapshotEntry {
                    name,
                    description: i.get("description").map(value_text).unwrap_or_default(),
                    snaptime: i.get("snaptime").and_then(Value::as_i64),
                    vmstate: i.get("vmstate").map(value_text).is_some_and(|v| v == "1" || v == "true"),
                    parent: i.get("parent").and_then(Value::as_str).map(str::to_string),
                })
            })
            .collect();
        out.sort_by_key(|s| (s.snaptime.unwrap_or(0), s.name.clone()));
        Ok(out)
    }

    /// `POST clone`: `full: false` makes a linked clone (templates only).
    pub async fn clone_to(&self, c: &PveClient, newid: u32, name: &str, full: bool) -> Result<Upid, PveError> {
        let form = [("newid", newid.to_string()), ("name", name.to_string()), ("full", bool_param(full))];
        let d = c.post(&self.path("/clone"), &form).await?;
        self.upid(d, "clone")
    }

    /// `DELETE /nodes/{node}/qemu/{vmid}` with its disks (`purge` also drops
    /// it from backup jobs and HA).
    pub async fn destroy(&self, c: &PveClient) -> Result<Upid, PveError> {
        let q = [("purge", "1".to_string()), ("destroy-unreferenced-disks", "1".to_string())];
        let d = c.delete(&self.path(""), &q).await?;
        self.upid(d, "destroy")
    }
}

/// `GET /cluster/nextid`: the next free VMID (PVE answers a number or a string).
pub async fn next_id(c: &PveClient) -> Result<u32, PveError> {
    let d = c.get("/cluster/nextid", &[]).await?;
    value_text(&d)
        .parse()
        .map_err(|_| PveError::Decode { what: "GET /cluster/nextid".into(), detail: format!("not a VMID: {d}") })
}

/// The host PCI devices a config passes through (`hostpciN`), in key order:
/// `host=` or the first value, each of its `;`-separated ids normalized
/// (`01:00` -> `0000:01:00`); a cluster resource mapping (`mapping=NAME`)
/// as `mapping:NAME`, since the node resolves it to a device only at start.
pub fn passthrough(config: &BTreeMap<String, String>) -> Vec<String> {
    let mut keys: Vec<(u32, &String)> = config
        .iter()
        .filter_map(|(k, v)| k.strip_prefix("hostpci").and_then(|n| n.parse().ok()).map(|n: u32| (n, v)))
        .collect();
    keys.sort();
    let mut out = Vec::new();
    for (_, value) in keys {
        let props: Vec<&str> = value.split(',').collect();
        if let Some(m) = props.iter().find_map(|p| p.strip_prefix("mapping=")) {
            out.push(format!("mapping:{m}"));
            continue;
        }
        let host = props
            .iter()
            .find_map(|p| p.strip_prefix("host="))
            .or_else(|| props.first().filter(|p| !p.contains('=')).copied());
        for id in host.into_iter().flat_map(|h| h.split(';')).filter(|id| !id.is_empty()) {
            out.push(crate::vm::normalize_pci(id));
        }
    }
    out
}

/// Whether a config marks a template (`template: 1`).
pub fn is_template(config: &BTreeMap<String, String>) -> bool {
    config.get("template").is_some_and(|v| v == "1")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passed_through_devices_come_from_hostpci_keys() {
        let config: BTreeMap<String, String> = [
            ("hostpci1", "host=0000:02:00.0;0000:02:00.1,pcie=1"),
            ("hostpci0", "01:00,x-vga=1,pcie=1"),
            ("hostpci10", "mapping=gpu-a,pcie=1"),
            ("vga", "std"),
            ("net0", "virtio=AA:BB:CC:DD:EE:FF,bridge=vmbr0"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        assert_eq!(passthrough(&config), vec!["0000:01:00", "0000:02:00.0", "0000:02:00.1", "mapping:gpu-a"]);
        assert!(passthrough(&BTreeMap::new()).is_empty());
    }
}
