//! `guest-xwrap install` and `uninstall` for every display manager, applied for real inside a
//! private mount namespace whose /etc, /usr/bin and /var/lib are overlays (the machine's own
//! are not changed): the integration appears, and afterwards the system is byte-identical.
//! Needs root, as unshare and mount do.

use std::process::Command;

use xbridge_e2e::*;

const SCRIPT: &str = r#"
set -eu
for d in /etc /usr/bin /var/lib; do
    mkdir -p "$WORK/ov$d/upper" "$WORK/ov$d/work"
    mount -t overlay overlay -o "lowerdir=$d,upperdir=$WORK/ov$d/upper,workdir=$WORK/ov$d/work" "$d"
done
snapshot() {
    find /etc /var/lib/dpkg/diversions /var/lib/xbridge /usr/bin -xdev -type f -print0 2>/dev/null | sort -z | xargs -0 sha256sum
    find /etc /var/lib/xbridge /usr/bin -xdev \( -type d -o -type l \) -printf '%p %y %l %m\n' 2>/dev/null | sort
    find /etc /var/lib/xbridge /usr/bin -xdev -type f -printf '%p %m\n' 2>/dev/null | sort
}
snapshot > "$WORK/before"
"$XWRAP" install --dm "$DM" > "$WORK/install.out"
sh -c "$EXPECT"
"$XWRAP" uninstall --dm "$DM"
snapshot > "$WORK/after"
diff "$WORK/before" "$WORK/after"
"#;

#[test]
fn install_then_uninstall_for_every_display_manager_is_byte_identical() {
    require("unshare");
    require("dpkg-divert");
    let xwrap = bin("guest-xwrap");
    let w = xwrap.display();
    let cases = [
        ("gdm3", format!("test \"$(readlink /usr/bin/Xorg)\" = {w} && grep -q '^WaylandEnable=false' /etc/gdm3/daemon.conf && dpkg-divert --list /usr/bin/Xorg | grep -q xbridge-real")),
        ("gdm-legacy", format!("grep -q '^command={w}' /etc/gdm/custom.conf && grep -q '^0=xbridge' /etc/gdm/custom.conf")),
        ("lightdm", format!("grep -q '^xserver-command={w}' /etc/lightdm/lightdm.conf.d/50-xbridge.conf")),
        ("sddm", format!("grep -q '^ServerPath={w}' /etc/sddm.conf.d/50-xbridge.conf")),
        ("xdm", format!("grep -q '^:0 local {w} :0' /etc/X11/xdm/Xservers && test -f /etc/xbridge/xwrap.toml")),
    ];
    for (dm, expect) in cases {
        let work = tempdir();
        let out = Command::new("unshare")
            .args(["-m", "--propagation", "private", "sh", "-c", SCRIPT])
            .env("WORK", work.path())
            .env("XWRAP", &xwrap)
            .env("DM", dm)
            .env("EXPECT", &expect)
            .output()
            .unwrap();
        let installed =
            std::fs::read_to_string(work.path().join("install.out")).unwrap_or_default();
        assert!(
            out.status.success(),
            "{dm}: {}\n{}\ninstall printed:\n{installed}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(installed.contains(&format!("{w}")), "{dm}: {installed}");
    }
}

#[test]
fn dry_run_prints_the_exact_changes_and_makes_none() {
    let xwrap = bin("guest-xwrap");
    let out = Command::new(&xwrap)
        .args(["install", "--dm", "lightdm", "--dry-run"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("write /etc/lightdm/lightdm.conf.d/50-xbridge.conf:"),
        "{text}"
    );
    assert!(
        text.contains(&format!("xserver-command={}", xwrap.display())),
        "{text}"
    );
    assert!(!std::path::Path::new("/etc/lightdm/lightdm.conf.d/50-xbridge.conf").exists());
    assert!(!std::path::Path::new("/var/lib/xbridge/installed-lightdm.json").exists());
}

/// With guest-xwrap installed for GDM, `check` (as root) tries the key as GDM's own user, who
/// runs the login screen's X server: refused while only root can read it, fine once chowned.
#[test]
fn check_tells_whether_gdms_user_can_read_the_key() {
    require("unshare");
    require("dpkg-divert");
    require("gdm3");
    let work = tempdir();
    let keys = work.path().join("keys");
    std::fs::create_dir(&keys).unwrap();
    let (_, key) = key_file(&keys);
    let config = GuestConfig::new("tcp:127.0.0.1:9", &key, "");
    let script = r#"
set -eu
for d in /etc /usr/bin /var/lib; do
    mkdir -p "$WORK/ov$d/upper" "$WORK/ov$d/work"
    mount -t overlay overlay -o "lowerdir=$d,upperdir=$WORK/ov$d/upper,workdir=$WORK/ov$d/work" "$d"
done
"$XWRAP" check --config "$CONFIG" > "$WORK/not-installed" || true
"$XWRAP" install --dm gdm3 > /dev/null
"$XWRAP" check --config "$CONFIG" > "$WORK/root-only" || true
chmod 711 "$WORK" "$(dirname "$KEY")"
chown Debian-gdm "$KEY"
"$XWRAP" check --config "$CONFIG" > "$WORK/chowned" || true
"#;
    let out = Command::new("unshare")
        .args(["-m", "--propagation", "private", "sh", "-c", script])
        .env("WORK", work.path())
        .env("XWRAP", bin("guest-xwrap"))
        .env("CONFIG", &config.path)
        .env("KEY", &key)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let read = |name: &str| std::fs::read_to_string(work.path().join(name)).unwrap();
    let step = "display manager's user";
    let not_installed = read("not-installed");
    assert!(!not_installed.contains(step), "{not_installed}");
    let root_only = read("root-only");
    assert!(
        root_only.contains(&format!("FAIL {step}"))
            && root_only.contains(&format!("chown Debian-gdm {}", key.display())),
        "{root_only}"
    );
    let chowned = read("chowned");
    assert!(
        chowned.contains(&format!("ok   {step}: Debian-gdm can read")),
        "{chowned}"
    );
}
