//! GDM 43's `gdm-x-session` runs "/usr/bin/Xorg" with `-displayfd 3` and no `:N`; here that
//! Xorg is guest-xwrap, put in place by an overlay on /usr/bin inside a private mount
//! namespace (the machine's /usr/bin is not changed). Needs root, as unshare and mount do.

use std::process::Command;

use xbridge_e2e::*;

#[test]
fn gdm_x_session_reads_the_display_from_displayfd_and_gets_past_server_start() {
    let session = std::path::Path::new("/usr/libexec/gdm-x-session");
    assert!(
        session.is_file(),
        "gdm-x-session is missing; run `cargo xtask deps` or `sudo apt-get install gdm3`"
    );
    require("dbus-run-session");
    let xvfb = Xvfb::start();
    let agent = Agent::start(&xvfb, &[]);
    let guest = GuestConfig::for_agent(&agent, "");
    let dir = tempdir();
    let (upper, work) = (dir.path().join("upper"), dir.path().join("work"));
    std::fs::create_dir_all(&upper).unwrap();
    std::fs::create_dir_all(&work).unwrap();
    let xorg = upper.join("Xorg");
    std::fs::write(
        &xorg,
        format!(
            "#!/bin/sh\nexec {} --config {} \"$@\"\n",
            bin("guest-xwrap").display(),
            guest.path.display()
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&xorg, std::fs::Permissions::from_mode(0o755)).unwrap();
    let script = format!(
        "mount -t overlay overlay -o lowerdir=/usr/bin,upperdir={},workdir={} /usr/bin && exec dbus-run-session -- {} --run-script true",
        upper.display(),
        work.display(),
        session.display()
    );
    let out = Command::new(require("unshare"))
        .args(["-m", "sh", "-c", &script])
        .env_remove("DISPLAY")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let log = guest.log_text();
    assert!(
        !stderr.contains("mount:"),
        "the overlay needs root: {stderr}"
    );
    // The wrapper was called the way gdm-x-session calls Xorg: -displayfd, no display number.
    assert!(
        log.contains("\"-displayfd\"") && !log.contains("args=[\":"),
        "{log}"
    );
    assert!(
        log.contains("nested server accepts connections"),
        "{log}\n{stderr}"
    );
    // gdm-x-session read the number and went on to its next step (registering with the
    // display manager, which is absent here); on EOF it would have said it could not run X.
    assert!(
        stderr.contains("could not contact display manager"),
        "{stderr}"
    );
    assert!(!stderr.contains("Unable to run X server"), "{stderr}");
}
