//! Real xdm runs guest-xwrap from an Xservers line, and its greeter appears inside the
//! nested server on the host display.
//! The agent runs in its default untrusted mode, as a user's would.

use std::process::{Command, Stdio};
use std::time::Duration;

use x11rb::connection::Connection;
use x11rb::protocol::xproto::{ConnectionExt as _, MapState};
use xbridge_e2e::*;

#[test]
fn xdm_greeter_appears_in_the_nested_server() {
    let xvfb = Xvfb::start();
    let agent = Agent::start(&xvfb, &[]);
    let guest = GuestConfig::for_agent(&agent, "title = \"xbridge xdm test\"");
    let dir = tempdir();
    let d = dir.path();
    let n = free_display();
    std::fs::create_dir_all(d.join("auth")).unwrap();
    std::fs::write(
        d.join("xdm-config"),
        format!(
            "DisplayManager.authDir: {d}/auth\nDisplayManager.errorLogFile: {d}/xdm.log\nDisplayManager.pidFile: {d}/xdm.pid\n\
             DisplayManager.keyFile: /etc/X11/xdm/xdm-keys\nDisplayManager.servers: {d}/Xservers\nDisplayManager.requestPort: 0\n\
             DisplayManager*resources: /etc/X11/xdm/Xresources\nDisplayManager*authorize: true\n",
            d = d.display()
        ),
    )
    .unwrap();
    std::fs::write(
        d.join("Xservers"),
        format!(
            ":{n} local {} --config {} :{n}\n",
            bin("guest-xwrap").display(),
            guest.path.display()
        ),
    )
    .unwrap();
    let _xdm = Guard(
        Command::new(require("xdm"))
            .args(["-nodaemon", "-config"])
            .arg(d.join("xdm-config"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let xdm_log = || std::fs::read_to_string(d.join("xdm.log")).unwrap_or_default();

    // The cookie xdm gave its server, from the file it passed with -auth.
    let auth_dir = d.join("auth/authdir/authfiles");
    let cookie = wait_for(Duration::from_secs(30), "xdm's server auth file", || {
        let file = std::fs::read_dir(&auth_dir)
            .ok()?
            .filter_map(Result::ok)
            .find(|e| {
                e.file_name()
                    .to_string_lossy()
                    .starts_with(&format!("A:{n}-"))
            })?;
        xbridge_proto::xauthority::server_cookie(&file.path(), n)
            .ok()
            .flatten()
    });
    let nested = wait_for(Duration::from_secs(30), "the nested display", || {
        try_connect_with(n, Some(&cookie)).ok()
    });
    let root = nested.setup().roots[0].root;
    wait_for(
        Duration::from_secs(60),
        "xdm's greeter window in the nested server",
        || {
            let tree = nested.query_tree(root).ok()?.reply().ok()?;
            tree.children
                .iter()
                .any(|&w| {
                    nested
                        .get_window_attributes(w)
                        .ok()
                        .and_then(|c| c.reply().ok())
                        .is_some_and(|a| a.map_state == MapState::VIEWABLE)
                })
                .then_some(())
        },
    );
    // And the nested server is a window on the host display.
    let host = xvfb.connect();
    let host_root = host.setup().roots[0].root;
    let titles: Vec<String> = host
        .query_tree(host_root)
        .unwrap()
        .reply()
        .unwrap()
        .children
        .iter()
        .filter_map(|&w| {
            host.get_property(
                false,
                w,
                x11rb::protocol::xproto::AtomEnum::WM_NAME,
                x11rb::protocol::xproto::AtomEnum::STRING,
                0,
                256,
            )
            .ok()?
            .reply()
            .ok()
        })
        .map(|p| String::from_utf8_lossy(&p.value).into_owned())
        .collect();
    assert!(
        titles.iter().any(|t| t == "xbridge xdm test"),
        "host windows: {titles:?}\nxdm log:\n{}",
        xdm_log()
    );
}
