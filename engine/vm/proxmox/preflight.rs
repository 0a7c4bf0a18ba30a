//! What a VM's Proxmox config means for visual tests, before anything starts.
//!
//! - `vga` other than `std`: captures break (virtio-gpu and qxl failed under
//!   compositing on several distros); `serialN`/`none` have no screen at all.
//! - `tablet: 0`: no USB tablet, the pointer is relative and absolute clicks
//!   drift. PVE's default is a tablet, so only an explicit 0 warns.
//! - `machine` other than q35: a note; q35 is the tested machine type.
//! - `lock`: another operation holds the VM.
//!
//! Pure: takes the config as `GET config` returns it.

use std::collections::BTreeMap;

/// The `type` of a property string like `std,memory=32` or `type=qxl2`.
fn property_type(value: &str) -> Option<String> {
    value.split(',').find_map(|part| match part.split_once('=') {
        Some(("type", t)) => Some(t.trim().to_string()),
        Some(_) => None,
        None => Some(part.trim().to_string()).filter(|s| !s.is_empty()),
    })
}

/// The display adapter PVE would use (its default is `std`, `cirrus` only for
/// Windows XP/2000/2003).
pub fn vga_type(config: &BTreeMap<String, String>) -> String {
    match config.get("vga").and_then(|v| property_type(v)) {
        Some(t) => t,
        None if matches!(config.get("ostype").map(String::as_str), Some("wxp" | "w2k" | "w2k3")) => "cirrus".into(),
        None => "std".into(),
    }
}

/// Warnings for a VM config; empty when the VM suits visual tests.
pub fn warnings(vmid: u32, config: &BTreeMap<String, String>) -> Vec<String> {
    let mut out = Vec::new();
    let vga = vga_type(config);
    if vga.starts_with("serial") || vga == "none" {
        out.push(format!(
            "VM {vmid} has vga: {vga}: there is no graphical console for VNC; set it with `qm set {vmid} --vga std`"
        ));
    } else if vga != "std" {
        out.push(format!(
            "VM {vmid} has vga: {vga}: screen capture over VNC is only reliable with vga: std (virtio-gpu and qxl broke captures under compositing); `qm set {vmid} --vga std`"
        ));
    }
    if config.get("tablet").is_some_and(|t| t == "0") {
        out.push(format!(
            "VM {vmid} has tablet: 0: without the USB tablet the pointer is relative and absolute clicks drift; `qm set {vmid} --tablet 1`"
        ));
    }
    let machine = config.get("machine").and_then(|m| property_type(m)).unwrap_or_else(|| "i440fx".into());
    if !machine.contains("q35") {
        out.push(format!(
            "note: VM {vmid} uses machine type {machine}; q35 is the machine type smoke is tested with (`qm set {vmid} --machine q35`)"
        ));
    }
    if let Some(lock) = config.get("lock") {
        out.push(format!(
            "VM {vmid} is locked ({lock}): another operation holds it; starting or snapshotting may fail"
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conf(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn a_q35_std_vm_with_default_tablet_has_no_warnings() {
        assert!(warnings(100, &conf(&[("vga", "std"), ("machine", "q35")])).is_empty());
        assert!(warnings(100, &conf(&[("machine", "pc-q35-9.2+pve1"), ("tablet", "1")])).is_empty());
        assert!(
            warnings(100, &conf(&[("vga", "type=std,memory=32"), ("machine", "type=q35,viommu=intel")])).is_empty()
        );
    }

    #[test]
    fn display_pointer_and_machine_problems_are_named() {
        let w = warnings(101, &conf(&[("vga", "virtio,memory=64"), ("tablet", "0")]));
        assert_eq!(w.len(), 3, "{w:?}");
        assert!(w[0].contains("vga: virtio") && w[0].contains("qm set 101 --vga std"), "{w:?}");
        assert!(w[1].contains("tablet: 0") && w[1].contains("clicks drift"), "{w:?}");
        assert!(w[2].contains("i440fx") && w[2].starts_with("note:"), "{w:?}");
        let w = warnings(102, &conf(&[("vga", "serial0"), ("machine", "q35"), ("lock", "backup")]));
        assert!(w[0].contains("no graphical console"), "{w:?}");
        assert!(w[1].contains("locked (backup)"), "{w:?}");
        assert_eq!(vga_type(&conf(&[("ostype", "wxp")])), "cirrus");
        assert_eq!(vga_type(&conf(&[("vga", "qxl2")])), "qxl2");
    }
}
