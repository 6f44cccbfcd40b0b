//! From the arguments a display manager gives "the X server" to what Xephyr or Xnest accept.
//!
//! A pure function, so every display manager's argv (see DESIGN.md) is a table test.

use std::os::fd::RawFd;
use std::path::PathBuf;

/// Which nested server the arguments are for; Xnest accepts fewer options.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavor {
    Xephyr,
    Xnest,
}

/// What the display manager asked for, and what passes on to the nested server.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DmArgs {
    /// `:N`, when given (GDM 43 and SDDM give none and read `-displayfd`).
    pub display: Option<u16>,
    /// `-auth FILE`: the cookie the display manager's greeter will present.
    pub auth: Option<PathBuf>,
    /// `-displayfd FD`: where the display manager reads `N\n`.
    pub displayfd: Option<RawFd>,
    /// Arguments for the nested server, in order.
    pub passthrough: Vec<String>,
    /// Arguments dropped because nested servers reject them (logged at debug).
    pub dropped: Vec<String>,
}

/// Xorg options with one value that nested servers reject.
const DROP_WITH_VALUE: &[&str] = &[
    "-logverbose",
    "-logfile",
    "-config",
    "-masterfd",
    "-layout",
    "-configdir",
    "-modulepath",
];
/// Xorg options without a value that nested servers reject.
const DROP_ALONE: &[&str] = &["-keeptty", "-novtswitch", "-sharevts"];

/// Splits a display manager's argv.
pub fn translate(args: &[String]) -> Result<DmArgs, String> {
    let mut out = DmArgs::default();
    let mut it = args.iter().peekable();
    while let Some(arg) = it.next() {
        let mut value = |name: &str| {
            it.next()
                .cloned()
                .ok_or_else(|| format!("{name} needs a value"))
        };
        match arg.as_str() {
            a if a.starts_with(':') => {
                out.display = Some(
                    a[1..]
                        .split('.')
                        .next()
                        .unwrap_or("")
                        .parse()
                        .map_err(|_| format!("`{a}` is not a display like :0"))?,
                );
            }
            "-auth" => {
                let path = value("-auth")?;
                out.passthrough.extend(["-auth".to_owned(), path.clone()]);
                out.auth = Some(PathBuf::from(path));
            }
            "-displayfd" => {
                let fd = value("-displayfd")?;
                out.displayfd =
                    Some(fd.parse().map_err(|_| {
                        format!("-displayfd `{fd}` is not a file descriptor number")
                    })?);
            }
            "-verbose" => {
                // The level is optional.
                out.dropped.push(arg.clone());
                if it.peek().is_some_and(|n| n.parse::<u32>().is_ok()) {
                    out.dropped.push(it.next().cloned().unwrap_or_default());
                }
            }
            a if DROP_WITH_VALUE.contains(&a) => {
                let v = value(a)?;
                out.dropped.extend([arg.clone(), v]);
            }
            a if DROP_ALONE.contains(&a) => out.dropped.push(arg.clone()),
            a if a.len() > 2
                && a.starts_with("vt")
                && a[2..].bytes().all(|b| b.is_ascii_digit()) =>
            {
                out.dropped.push(arg.clone())
            }
            _ => out.passthrough.push(arg.clone()),
        }
    }
    Ok(out)
}

/// What to add for the nested server's window and keyboard.
#[derive(Debug, Clone, Default)]
pub struct Look {
    pub size: Option<(u16, u16)>,
    pub title: String,
    pub fullscreen: bool,
    pub resizeable: bool,
    /// XKB rules, model, layout, variant, options.
    pub keymap: Option<[String; 5]>,
}

/// The nested server's argv (without the program name).
pub fn nested_argv(
    flavor: Flavor,
    display: Option<u16>,
    dm: &DmArgs,
    look: &Look,
    displayfd: RawFd,
    extra: &[String],
) -> Vec<String> {
    let mut argv = Vec::new();
    if let Some(n) = display {
        argv.push(format!(":{n}"));
    }
    argv.extend(dm.passthrough.iter().cloned());
    argv.extend(["-displayfd".to_owned(), displayfd.to_string()]);
    match flavor {
        Flavor::Xephyr => {
            if let Some((w, h)) = look.size {
                argv.extend(["-screen".to_owned(), format!("{w}x{h}")]);
            }
            argv.extend(["-title".to_owned(), look.title.clone()]);
            // Xephyr's host-side cursor crashes it (SIGSEGV) when the host grants it only an
            // untrusted authorization, as soon as a greeter sets a cursor; drawing the cursor
            // itself avoids that path entirely.
            argv.push("-sw-cursor".into());
            if look.fullscreen {
                argv.push("-fullscreen".into());
            }
            if look.resizeable {
                argv.push("-resizeable".into());
            }
            if let Some([rules, model, layout, variant, options]) = &look.keymap {
                argv.extend([
                    "-keybd".to_owned(),
                    format!("ephyr,,,xkbrules={rules},xkbmodel={model},xkblayout={layout},xkbvariant={variant},xkboptions={options}"),
                ]);
            }
        }
        Flavor::Xnest => {
            if let Some((w, h)) = look.size {
                argv.extend(["-geometry".to_owned(), format!("{w}x{h}")]);
            }
            argv.extend(["-name".to_owned(), look.title.clone()]);
            // Xnest has no fullscreen, resize or keymap options; it takes the host's keymap itself.
        }
    }
    argv.extend(extra.iter().cloned());
    argv
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(s: &str) -> Vec<String> {
        s.split_whitespace().map(String::from).collect()
    }

    /// (who, argv, display, auth, displayfd, passthrough, dropped)
    type Case = (
        &'static str,
        &'static str,
        Option<u16>,
        Option<&'static str>,
        Option<RawFd>,
        &'static str,
        &'static str,
    );

    #[test]
    fn display_managers() {
        let cases: &[Case] = &[
            ("GDM 2.20", ":0 -auth /var/lib/gdm/:0.Xauth -nolisten tcp vt7", Some(0), Some("/var/lib/gdm/:0.Xauth"), None, "-auth /var/lib/gdm/:0.Xauth -nolisten tcp", "vt7"),
            ("gdm-x-session", "vt1 -displayfd 3 -auth /run/user/120/gdm/Xauthority -nolisten tcp -background none -noreset -keeptty -novtswitch -verbose 3", None, Some("/run/user/120/gdm/Xauthority"), Some(3), "-auth /run/user/120/gdm/Xauthority -nolisten tcp -background none -noreset", "vt1 -keeptty -novtswitch -verbose 3"),
            ("GDM 43 legacy", "-background none -noreset -verbose 3 :1 -auth /a -seat seat0 -nolisten tcp vt2", Some(1), Some("/a"), None, "-background none -noreset -auth /a -seat seat0 -nolisten tcp", "-verbose 3 vt2"),
            ("LightDM", ":0 -seat seat0 -auth /var/run/lightdm/root/:0 -nolisten tcp vt7 -novtswitch", Some(0), Some("/var/run/lightdm/root/:0"), None, "-seat seat0 -auth /var/run/lightdm/root/:0 -nolisten tcp", "vt7 -novtswitch"),
            ("SDDM", "-nolisten tcp -auth /var/run/sddm/x -background none -noreset -displayfd 17 -seat seat0 vt1", None, Some("/var/run/sddm/x"), Some(17), "-nolisten tcp -auth /var/run/sddm/x -background none -noreset -seat seat0", "vt1"),
            ("xdm", ":0 -nolisten tcp -auth /etc/X11/xdm/authdir/authfiles/A:0-x", Some(0), Some("/etc/X11/xdm/authdir/authfiles/A:0-x"), None, "-nolisten tcp -auth /etc/X11/xdm/authdir/authfiles/A:0-x", ""),
            ("xinit", ":5 vt3 -keeptty -auth /tmp/serverauth.x", Some(5), Some("/tmp/serverauth.x"), None, "-auth /tmp/serverauth.x", "vt3 -keeptty"),
            ("-verbose without a level", "-verbose :2 -logfile /x.log -config a.conf", Some(2), None, None, "", "-verbose -logfile /x.log -config a.conf"),
        ];
        for (who, input, display, auth, fd, pass, dropped) in cases {
            let dm = translate(&argv(input)).unwrap();
            assert_eq!(dm.display, *display, "{who}");
            assert_eq!(dm.auth.as_deref(), auth.map(std::path::Path::new), "{who}");
            assert_eq!(dm.displayfd, *fd, "{who}");
            assert_eq!(dm.passthrough, argv(pass), "{who}");
            assert_eq!(dm.dropped, argv(dropped), "{who}");
        }
    }

    #[test]
    fn bad_arguments_are_explained() {
        assert!(translate(&argv(":x")).unwrap_err().contains(":x"));
        assert!(translate(&argv("-auth"))
            .unwrap_err()
            .contains("-auth needs a value"));
        assert!(translate(&argv("-displayfd three"))
            .unwrap_err()
            .contains("three"));
    }

    #[test]
    fn nested_arguments_per_flavor() {
        let dm = translate(&argv(":3 -auth /a vt7")).unwrap();
        let look = Look {
            size: Some((800, 600)),
            title: "guest :3".into(),
            fullscreen: false,
            resizeable: true,
            keymap: None,
        };
        assert_eq!(
            nested_argv(Flavor::Xephyr, Some(3), &dm, &look, 9, &[]),
            argv(":3 -auth /a -displayfd 9 -screen 800x600 -title")
                .into_iter()
                .chain(["guest :3".into(), "-sw-cursor".into(), "-resizeable".into()])
                .collect::<Vec<_>>()
        );
        let xnest = nested_argv(Flavor::Xnest, None, &dm, &look, 9, &["-br".into()]);
        assert_eq!(
            xnest,
            [
                "-auth",
                "/a",
                "-displayfd",
                "9",
                "-geometry",
                "800x600",
                "-name",
                "guest :3",
                "-br"
            ]
        );
    }
}
