//! The configuration's unit tests: defaults, overlays, and every bad key named.

use super::*;

fn cli() -> Cli {
    Cli::default()
}

#[test]
fn embedded_default_is_valid() {
    let cfg = Config::load(&cli()).unwrap();
    assert_eq!(cfg.socket, PathBuf::from("/run/faultline/agent.sock"));
    assert_eq!(cfg.max_duration, Duration::from_secs(3600));
    for name in [
        "sshd",
        "sshd-session",
        "systemd",
        "systemd-journal",
        "systemd-logind",
        "systemd-udevd",
        "dbus-daemon",
        "auditd",
        "agetty",
        "containerd",
        "containerd-shim",
        "dockerd",
        "kubelet",
        "faultline-agent",
    ] {
        assert!(
            cfg.protected_comms.iter().any(|p| p.matches(name)),
            "{name} is not protected by default"
        );
    }
    assert_eq!(cfg.listen, None);
    assert!(cfg.keep_tcx_hooks);
    assert_eq!(cfg.nth_call_capacity, 8192);
    assert_eq!(cfg.ssh_ports, [22]);
    assert_eq!(cfg.default_lease, Some(Duration::from_secs(15)));
    assert_eq!(cfg.limits, crate::limits::Limits::default());
}

#[test]
fn default_lease_from_flag_off_and_bounds_name_the_key() {
    let mut c = cli();
    c.default_lease = Some("2s".into());
    assert_eq!(
        Config::load(&c).unwrap().default_lease,
        Some(Duration::from_secs(2))
    );
    c.default_lease = Some("off".into());
    assert_eq!(Config::load(&c).unwrap().default_lease, None);
    for bad in ["100ms", "2h", "soon"] {
        c.default_lease = Some(bad.into());
        let e = Config::load(&c).unwrap_err().to_string();
        assert!(e.contains("`default_lease`"), "{bad}: {e}");
    }
}

#[test]
fn experiment_limits_from_file_and_bad_values_name_the_key() {
    let dir = std::env::temp_dir().join(format!("fl-cfg-limits-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("a.toml");
    let mut c = cli();
    c.config = Some(file.clone());
    std::fs::write(
        &file,
        "max_running_experiments = 8\nkeep_ended_experiments = 0\n",
    )
    .unwrap();
    let l = Config::load(&c).unwrap().limits;
    assert_eq!((l.max_running, l.keep_ended), (8, 0));
    for (text, key) in [
        ("max_running_experiments = 0", "`max_running_experiments`"),
        ("max_running_experiments = 129", "`max_running_experiments`"),
        (
            "keep_ended_experiments = 100001",
            "`keep_ended_experiments`",
        ),
    ] {
        std::fs::write(&file, text).unwrap();
        let e = Config::load(&c).unwrap_err().to_string();
        assert!(e.contains(key), "{text}: {e}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn nth_call_capacity_from_flag_and_bad_values_name_the_key() {
    let mut c = cli();
    c.nth_call_capacity = Some(2);
    assert_eq!(Config::load(&c).unwrap().nth_call_capacity, 2);
    for bad in [0, (1 << 24) + 1] {
        c.nth_call_capacity = Some(bad);
        let e = Config::load(&c).unwrap_err().to_string();
        assert!(e.contains("`nth_call_capacity`"), "{e}");
    }
}

#[test]
fn metrics_listen_is_off_by_default_and_loopback_only() {
    assert_eq!(Config::load(&cli()).unwrap().metrics_listen, None);
    let mut c = cli();
    c.metrics_listen = Some("127.0.0.1:9464".into());
    assert_eq!(
        Config::load(&c).unwrap().metrics_listen,
        Some("127.0.0.1:9464".parse().unwrap())
    );
    c.metrics_listen = Some("[::1]:9464".into());
    assert!(Config::load(&c).unwrap().metrics_listen.is_some());
    for (bad, why) in [
        ("0.0.0.0:9464", "not a loopback address"),
        ("10.1.2.3:9464", "TLS"),
        ("localhost", "not an address:port"),
    ] {
        c.metrics_listen = Some(bad.into());
        let e = Config::load(&c).unwrap_err().to_string();
        assert!(
            e.contains("`metrics_listen`") && e.contains(why),
            "{bad}: {e}"
        );
    }
}

#[test]
fn keep_tcx_hooks_from_file_then_flag() {
    let dir = std::env::temp_dir().join(format!("fl-cfg-tcx-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("a.toml");
    std::fs::write(&file, "keep_tcx_hooks = false\n").unwrap();
    let mut c = cli();
    c.config = Some(file.clone());
    assert!(!Config::load(&c).unwrap().keep_tcx_hooks);
    c.keep_tcx_hooks = Some(true);
    assert!(Config::load(&c).unwrap().keep_tcx_hooks);
    std::fs::write(&file, "keep_tcx_hooks = \"no\"\n").unwrap();
    c.keep_tcx_hooks = None;
    let e = Config::load(&c).unwrap_err().to_string();
    assert!(e.contains("keep_tcx_hooks"), "{e}");
    std::fs::write(&file, "interface_hooks = \"cgroup_skb\"\n").unwrap();
    assert!(Config::load(&c).unwrap().interface_via_cgroup);
    c.interface_hooks = Some("xdp".into());
    let e = Config::load(&c).unwrap_err().to_string();
    assert!(e.contains("interface_hooks") && e.contains("xdp"), "{e}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn plain_tcp_needs_the_insecure_opt_in() {
    let dir = std::env::temp_dir().join(format!("fl-cfg-tcp-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("a.toml");
    let mut c = cli();
    c.listen = Some("127.0.0.1:50051".into());
    let err = Config::load(&c).unwrap_err().to_string();
    assert!(
        err.contains("`listen`")
            && err.contains("no authentication")
            && err.contains("TLS")
            && err.contains("insecure_listen"),
        "{err}"
    );
    c.insecure_listen = true;
    let cfg = Config::load(&c).unwrap();
    assert_eq!(cfg.listen, Some("127.0.0.1:50051".parse().unwrap()));
    // The same opt-in from the file; loopback-only still holds with it.
    c.insecure_listen = false;
    std::fs::write(&file, "insecure_listen = true\n").unwrap();
    c.config = Some(file.clone());
    assert!(Config::load(&c).unwrap().listen.is_some());
    c.listen = Some("0.0.0.0:50051".into());
    let err = Config::load(&c).unwrap_err().to_string();
    assert!(err.contains("not a loopback address"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn flags_override_file_and_bad_values_name_the_key() {
    let dir = std::env::temp_dir().join(format!("fl-cfg-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("a.toml");
    std::fs::write(&file, "max_duration = \"10m\"\nsocket = \"/tmp/x.sock\"\n").unwrap();
    let mut c = cli();
    c.config = Some(file.clone());
    c.socket = Some("/tmp/y.sock".into());
    let cfg = Config::load(&c).unwrap();
    assert_eq!(cfg.max_duration, Duration::from_secs(600));
    assert_eq!(cfg.socket, PathBuf::from("/tmp/y.sock"));

    std::fs::write(&file, "listen = \"0.0.0.0:1\"\n").unwrap();
    let err = Config::load(&c).unwrap_err().to_string();
    assert!(
        err.contains("`listen`") && err.contains("loopback"),
        "{err}"
    );

    std::fs::write(&file, "protected_comms = [\"a*b\"]\n").unwrap();
    let err = Config::load(&c).unwrap_err().to_string();
    assert!(
        err.contains("protected_comms") && err.contains("a*b"),
        "{err}"
    );
    let many: Vec<String> = (0..65).map(|i| format!("\"p{i}\"")).collect();
    std::fs::write(&file, format!("protected_comms = [{}]\n", many.join(","))).unwrap();
    let err = Config::load(&c).unwrap_err().to_string();
    assert!(
        err.contains("protected_comms") && err.contains("65"),
        "{err}"
    );
    let many: Vec<String> = (2..4100).map(|i| i.to_string()).collect();
    std::fs::write(&file, format!("protected_pids = [{}]\n", many.join(","))).unwrap();
    let err = Config::load(&c).unwrap_err().to_string();
    assert!(
        err.contains("protected_pids") && err.contains("4098"),
        "{err}"
    );
    std::fs::write(&file, "ssh_ports = [22, 2222]\n").unwrap();
    assert_eq!(Config::load(&c).unwrap().ssh_ports, [22, 2222]);
    for bad in [
        "ssh_ports = [0]\n",
        "ssh_ports = [65536]\n",
        "ssh_ports = 22\n",
    ] {
        std::fs::write(&file, bad).unwrap();
        let err = Config::load(&c).unwrap_err().to_string();
        assert!(err.contains("ssh_ports"), "{bad}: {err}");
    }

    std::fs::write(&file, "max_duraton = \"1h\"\n").unwrap();
    let err = Config::load(&c).unwrap_err().to_string();
    assert!(err.contains("max_duraton"), "{err}");

    std::fs::write(&file, "max_duration = \"soon\"\n").unwrap();
    let err = Config::load(&c).unwrap_err().to_string();
    assert!(err.contains("max_duration"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}
