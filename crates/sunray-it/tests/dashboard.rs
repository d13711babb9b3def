//! `sunray dashboard` as a user meets it: a real dashboard process on loopback, a real
//! head, a real ASHA experiment; every endpoint asked over HTTP, with and without the
//! token.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};

use common::*;
use serde_json::Value;

const TUNE: &str = env!("CARGO_BIN_EXE_it_tune");

struct Reply {
    status: u16,
    /// The header lines, lowercased.
    headers: String,
    /// The header lines as sent.
    raw_headers: String,
    body: String,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.body))
    }
}

/// One HTTP/1.1 request (the connection closed after it).
fn http(port: u16, method: &str, path: &str, headers: &[(&str, &str)], body: &str) -> Reply {
    http_from(
        TcpStream::connect(("127.0.0.1", port)).unwrap(),
        port,
        method,
        path,
        headers,
        body,
    )
}

/// A connection to the dashboard on 127.0.0.1:`port` from another loopback address
/// (another client, as the server sees it).
fn connect_from(source: &str, port: u16) -> TcpStream {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let s = tokio::net::TcpSocket::new_v4().unwrap();
        s.bind(format!("{source}:0").parse().unwrap()).unwrap();
        let s = s
            .connect(([127, 0, 0, 1], port).into())
            .await
            .unwrap()
            .into_std()
            .unwrap();
        s.set_nonblocking(false).unwrap();
        s
    })
}

impl Reply {
    /// A header's value as sent (`name` in any case).
    fn header(&self, name: &str) -> Option<&str> {
        self.raw_headers.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }
}

fn http_from(
    mut s: TcpStream,
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Reply {
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\nContent-Length: {}\r\n", body.len());
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    req.push_str(body);
    s.write_all(req.as_bytes()).unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").expect("a complete reply");
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    Reply {
        status,
        headers: head.to_lowercase(),
        raw_headers: head.to_string(),
        body: body.to_string(),
    }
}

/// Starts `sunray dashboard` with `args`; returns it and its port (from its first line).
fn dashboard(c: &Cluster, args: &[&str]) -> (Child, u16) {
    dashboard_cmd(
        c.sunray(&[&["dashboard", "--port", "0"], args].concat()),
        &c.tmp,
    )
}

fn dashboard_cmd(mut cmd: Command, tmp: &std::path::Path) -> (Child, u16) {
    let mut d = cmd
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(tmp.join("dashboard.err")).unwrap())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(d.stdout.take().unwrap());
    let mut first = String::new();
    out.read_line(&mut first).unwrap();
    let port = first
        .split("http://127.0.0.1:")
        .nth(1)
        .and_then(|r| r.split('/').next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no address in {first:?}"));
    let mut rest = String::new();
    std::thread::spawn(move || out.read_to_string(&mut rest));
    (d, port)
}

#[test]
fn the_dashboard_shows_an_experiment_and_the_cluster_to_token_holders_only() {
    let c = Cluster::start(2.0, &[]);
    let results = c.tmp.join("results");
    let run = Command::new(TUNE)
        .args(["asha", results.to_str().unwrap()])
        .env("SUNRAY_TMPDIR", c.tmp.join("tune"))
        .env_remove("SUNRAY_ADDRESS")
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let token = c.token();
    let (mut d, port) = dashboard(
        &c,
        &[
            "--address",
            &c.address,
            "--results",
            results.to_str().unwrap(),
        ],
    );

    // Without the token: the login page, and no data.
    let page = http(port, "GET", "/", &[], "");
    assert_eq!(page.status, 200);
    assert!(page.body.contains("Cluster token") && !page.body.contains("id=\"curves\""));
    for path in [
        "/api/experiments",
        "/api/experiment?id=0/asha",
        "/api/curves?id=0/asha&metric=acc",
        "/api/cluster",
    ] {
        assert_eq!(http(port, "GET", path, &[], "").status, 401, "{path}");
        let wrong = http(
            port,
            "GET",
            path,
            &[("Authorization", "Bearer not-the-token")],
            "",
        );
        assert_eq!(wrong.status, 401, "{path}");
        assert!(wrong.json()["error"].as_str().unwrap().contains("log in"));
        let forged = http(
            port,
            "GET",
            path,
            &[(
                "Cookie",
                "sunray_dashboard=00112233445566778899aabbccddeeff",
            )],
            "",
        );
        assert_eq!(forged.status, 401, "{path}");
    }
    let form = [("Content-Type", "application/x-www-form-urlencoded")];
    let bad = http(port, "POST", "/login", &form, "token=guess");
    assert_eq!(bad.status, 401);
    assert!(bad.body.contains("not this cluster"));

    // Logged in: a session cookie, never the token.
    let login = http(port, "POST", "/login", &form, &format!("token={token}"));
    assert_eq!(login.status, 303);
    let cookie = login
        .headers
        .lines()
        .find_map(|l| l.strip_prefix("set-cookie: "))
        .expect("a cookie")
        .split(';')
        .next()
        .unwrap()
        .to_string();
    assert!(cookie.starts_with("sunray_dashboard=") && !cookie.contains(&token.to_lowercase()));
    let set_cookie = login.header("set-cookie").unwrap().to_lowercase();
    for attr in ["httponly", "samesite=strict", "path=/", "max-age=43200"] {
        assert!(set_cookie.contains(attr), "{attr} in {set_cookie}");
    }
    assert!(
        !set_cookie.contains("secure"),
        "plain HTTP: no Secure unless asked"
    );
    let auth = [("Cookie", cookie.as_str())];
    let page = http(port, "GET", "/", &auth, "");
    // Self-contained: nothing is fetched from elsewhere (clusters are often offline).
    assert!(page.body.contains("id=\"curves\""));
    for outside in ["src=\"http", "href=\"http", "<link", "@import", "url("] {
        assert!(!page.body.contains(outside), "the page loads {outside}…");
    }

    let list = http(port, "GET", "/api/experiments", &auth, "").json();
    let exps = list["experiments"].as_array().unwrap();
    assert_eq!(exps.len(), 1, "{list}");
    assert_eq!(exps[0]["id"], "0/asha");
    assert_eq!(exps[0]["trials"], 8);
    assert_eq!(exps[0]["metric"], "acc");
    assert_eq!(exps[0]["status"]["TERMINATED"], 8);

    let e = http(port, "GET", "/api/experiment?id=0/asha", &auth, "").json();
    let trials = e["trials"].as_array().unwrap();
    assert_eq!(trials.len(), 8);
    assert_eq!(e["scheduler"], "AsyncHyperBand");
    let rungs = e["rungs"].as_array().unwrap();
    assert!(
        !rungs.is_empty() && rungs.iter().any(|r| r["cutoff"].is_number()),
        "{e}"
    );
    // The best trial is the one with the highest last accuracy.
    let best = trials
        .iter()
        .max_by(|a, b| {
            a["last"]["acc"]
                .as_f64()
                .unwrap()
                .total_cmp(&b["last"]["acc"].as_f64().unwrap())
        })
        .unwrap();
    assert_eq!(e["best"], best["trial_id"]);
    assert!(trials
        .iter()
        .all(|t| t["config"]["lr"].is_number() && t["node_ip"] == "127.0.0.1"));
    // ASHA stopped some trials early: not every trial has max_t results.
    let iters: Vec<u64> = trials
        .iter()
        .map(|t| t["iterations"].as_u64().unwrap())
        .collect();
    assert!(
        iters.contains(&12) && iters.iter().any(|i| *i < 12),
        "{iters:?}"
    );

    let curves = http(
        port,
        "GET",
        "/api/curves?id=0/asha&metric=acc&x=training_iteration",
        &auth,
        "",
    )
    .json();
    let curves = curves["curves"].as_array().unwrap();
    assert_eq!(curves.len(), 8, "one line per trial");
    for (c, t) in curves.iter().zip(trials) {
        assert_eq!(c["trial_id"], t["trial_id"]);
        assert_eq!(
            c["points"].as_array().unwrap().len() as u64,
            t["iterations"].as_u64().unwrap()
        );
    }
    assert_eq!(
        http(port, "GET", "/api/curves?id=0/asha", &auth, "").status,
        400
    );
    assert_eq!(
        http(port, "GET", "/api/experiment?id=0/../..", &auth, "").status,
        404
    );

    // The cluster view, after a driver ran 30 tasks of one function.
    c.driver(&["burst", "30"]);
    let cl = http(port, "GET", "/api/cluster", &auth, "").json();
    let nodes = cl["view"]["nodes"].as_array().unwrap();
    assert_eq!(nodes.len(), 1);
    assert_eq!(nodes[0]["alive"], true);
    assert_eq!(nodes[0]["total"]["cpu"], 2.0);
    let functions = cl["view"]["functions"].as_array().unwrap();
    let square = functions
        .iter()
        .find(|f| f["function"].as_str().unwrap().ends_with("square"))
        .unwrap_or_else(|| panic!("{functions:?}"));
    assert_eq!(
        (
            square["finished"].as_u64(),
            square["waiting"].as_u64(),
            square["running"].as_u64()
        ),
        (Some(30), Some(0), Some(0))
    );

    // Without a browser: the same curves as a PNG of the size asked, a line per trial.
    let png_path = c.tmp.join("curves.png");
    let out = run_ok(c.sunray(&[
        "tune",
        "plot",
        results.join("asha").to_str().unwrap(),
        "--metric",
        "acc",
        "-o",
        png_path.to_str().unwrap(),
        "--width",
        "900",
        "--height",
        "500",
    ]));
    assert!(String::from_utf8_lossy(&out.stdout).contains("8 curves of acc"));
    let decoder = png::Decoder::new(std::io::BufReader::new(
        std::fs::File::open(&png_path).unwrap(),
    ));
    let mut reader = decoder.read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size().unwrap()];
    let info = reader.next_frame(&mut buf).unwrap();
    assert_eq!((info.width, info.height), (900, 500));
    let colours: std::collections::HashSet<[u8; 3]> = buf[..info.buffer_size()]
        .chunks(3)
        .map(|p| [p[0], p[1], p[2]])
        .collect();
    use sunray_dashboard::plot::{BEST, PALETTE};
    assert!(colours.contains(&BEST), "the best trial's line");
    for (i, c) in PALETTE.iter().enumerate() {
        assert_eq!(
            colours.contains(c),
            i < 7,
            "colour {i}: 7 other trials, one colour each"
        );
    }

    // Logs in this user's session directory: listed, their tails served; nothing else.
    let job = session_base(&c.tmp).join("j77");
    std::fs::create_dir_all(&job).unwrap();
    std::fs::write(
        job.join("nodes.log"),
        "[node 127.0.0.2] joined\n[node 127.0.0.2] ran square\n",
    )
    .unwrap();
    let logs = http(port, "GET", "/api/logs", &auth, "").json();
    assert!(
        logs["logs"]
            .as_array()
            .unwrap()
            .iter()
            .any(|l| l["name"] == "j77/nodes.log"),
        "{logs}"
    );
    let tail = http(port, "GET", "/api/log?name=j77/nodes.log", &auth, "").json();
    assert!(tail["tail"].as_str().unwrap().ends_with("ran square\n"));
    for bad in [
        "../results/asha/experiment_state.json",
        "/etc/passwd",
        "j77/../../head.err",
    ] {
        assert_eq!(
            http(port, "GET", &format!("/api/log?name={bad}"), &auth, "").status,
            404,
            "{bad}"
        );
    }
    assert_eq!(http(port, "GET", "/api/logs", &[], "").status, 401);

    // Logging out ends the session.
    http(port, "POST", "/logout", &auth, "");
    assert_eq!(http(port, "GET", "/api/experiments", &auth, "").status, 401);

    d.kill().ok();
    d.wait().ok();
    let err = std::fs::read_to_string(c.tmp.join("dashboard.err")).unwrap();
    assert!(!err.contains(&token), "the token is never logged");
    for pid in std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
    {
        if let Ok(cmd) = std::fs::read(format!("/proc/{pid}/cmdline")) {
            assert!(!String::from_utf8_lossy(&cmd).contains(&token));
        }
    }
}

#[test]
fn without_a_cluster_the_dashboard_needs_a_token_of_its_own() {
    let tmp = fresh_tmp();
    let out = sunray_in(
        &tmp,
        &[
            "dashboard",
            "--port",
            "0",
            "--results",
            tmp.to_str().unwrap(),
        ],
    )
    .output()
    .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--token-file"), "{err}");
}

#[test]
fn a_head_started_with_a_dashboard_port_serves_the_dashboard() {
    let tmp = fresh_tmp();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut head = sunray_in(
        &tmp,
        &[
            "start",
            "--head",
            "--block",
            "--port",
            "0",
            "--node-ip-address",
            "127.0.0.1",
            "--num-cpus",
            "1",
            "--dashboard-port",
            &port.to_string(),
        ],
    )
    .stdout(Stdio::piped())
    .stderr(std::fs::File::create(tmp.join("head.err")).unwrap())
    .spawn()
    .unwrap();
    wait_line(&mut head, "sunray head started:");
    let token = std::fs::read_dir(session_base(&tmp))
        .unwrap()
        .find_map(|e| std::fs::read_to_string(e.ok()?.path().join("token")).ok())
        .unwrap();
    let bearer = format!("Bearer {}", token.trim());
    assert_eq!(http(port, "GET", "/api/cluster", &[], "").status, 401);
    let cl = http(
        port,
        "GET",
        "/api/cluster",
        &[("Authorization", &bearer)],
        "",
    )
    .json();
    assert_eq!(cl["view"]["nodes"].as_array().unwrap().len(), 1, "{cl}");
    // A second head cannot take the same port: it says so and leaves nothing behind.
    let out = sunray_in(
        &tmp,
        &[
            "start",
            "--head",
            "--port",
            "0",
            "--node-ip-address",
            "127.0.0.1",
            "--dashboard-port",
            &port.to_string(),
        ],
    )
    .output()
    .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--dashboard-port"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    head.kill().ok();
    head.wait().ok();
}

#[test]
fn the_cluster_view_shows_actors_and_what_tasks_and_nodes_printed() {
    let c = Cluster::start(2.0, &[]);
    run_ok(c.program(env!("CARGO_BIN_EXE_it_actors"), &["chatty"]));
    let (mut d, port) = dashboard(&c, &["--address", &c.address]);
    let bearer = format!("Bearer {}", c.token());
    let auth = [("Authorization", bearer.as_str())];
    let cl = http(port, "GET", "/api/cluster", &auth, "").json();
    let actors = cl["view"]["actors"].as_array().unwrap();
    assert!(
        actors
            .iter()
            .any(|a| a["name"] == "talker" && a["state"] == "Alive" && a["detached"] == true),
        "{cl}"
    );
    let logs = http(port, "GET", "/api/logs", &auth, "").json();
    let entries = logs["logs"].as_array().unwrap();
    let task = entries
        .iter()
        .find(|e| {
            e["function"]
                .as_str()
                .is_some_and(|f| f.ends_with("::shout"))
        })
        .unwrap_or_else(|| panic!("no task output listed: {logs}"));
    let name = task["name"].as_str().unwrap();
    let tail = http(port, "GET", &format!("/api/log?name={name}"), &auth, "").json();
    assert_eq!(
        tail["tail"], "HELLO-LOG-LINE 0\nHELLO-LOG-LINE 1\nHELLO-LOG-LINE 2",
        "{tail}"
    );
    let node = entries
        .iter()
        .find(|e| e["name"].as_str().is_some_and(|n| n.starts_with("node:")))
        .expect("a node's output is listed");
    let name = node["name"].as_str().unwrap();
    let tail = http(port, "GET", &format!("/api/log?name={name}"), &auth, "").json();
    assert!(
        tail["tail"]
            .as_str()
            .unwrap()
            .contains(") HELLO-LOG-LINE 2"),
        "{tail}"
    );
    // Without the token: nothing.
    assert_eq!(
        http(port, "GET", "/api/log?name=node:1", &[], "").status,
        401
    );
    d.kill().ok();
    d.wait().ok();
}

/// A dashboard without a cluster, guarded by a token of our choosing (in a file).
fn standalone(tmp: &std::path::Path, token: &str, extra: &[&str]) -> (Child, u16) {
    let results = tmp.join("results");
    std::fs::create_dir_all(&results).unwrap();
    let file = tmp.join("dashboard-token");
    std::fs::write(&file, format!("{token}\n")).unwrap();
    let args = [
        &[
            "dashboard",
            "--port",
            "0",
            "--results",
            results.to_str().unwrap(),
            "--token-file",
            file.to_str().unwrap(),
        ],
        extra,
    ]
    .concat();
    dashboard_cmd(sunray_in(tmp, &args), tmp)
}

const FORM: [(&str, &str); 1] = [("Content-Type", "application/x-www-form-urlencoded")];

#[test]
fn every_answer_carries_a_strict_content_security_policy_naming_the_pages_own_script() {
    let tmp = fresh_tmp();
    let token = "a-chosen-secret-of-32-characters";
    let (mut d, port) = standalone(&tmp, token, &[]);
    let login = http(port, "POST", "/login", &FORM, &format!("token={token}"));
    assert_eq!(login.status, 303);
    let cookie = login
        .header("set-cookie")
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_string();
    let auth = [("Cookie", cookie.as_str())];
    let page = http(port, "GET", "/", &auth, "");
    assert!(page.body.contains("id=\"curves\""));
    let answers = [
        ("the page", page),
        ("the login page", http(port, "GET", "/", &[], "")),
        (
            "a wrong login",
            http(port, "POST", "/login", &FORM, "token=wrong"),
        ),
        ("the API", http(port, "GET", "/api/experiments", &auth, "")),
        ("a refusal", http(port, "GET", "/api/experiments", &[], "")),
        ("an unknown path", http(port, "GET", "/nothing", &auth, "")),
    ];
    for (what, r) in &answers {
        assert_eq!(
            r.header("x-content-type-options"),
            Some("nosniff"),
            "{what}"
        );
        assert_eq!(r.header("referrer-policy"), Some("no-referrer"), "{what}");
        assert_eq!(r.header("x-frame-options"), Some("DENY"), "{what}");
        let csp = r
            .header("content-security-policy")
            .unwrap_or_else(|| panic!("{what}: no policy in {}", r.headers));
        for directive in [
            "default-src 'none'",
            "connect-src 'self'",
            "form-action 'self'",
            "frame-ancestors 'none'",
            "base-uri 'none'",
        ] {
            assert!(
                csp.split(';').any(|d| d.trim() == directive),
                "{what}: {directive} in {csp}"
            );
        }
        assert!(!csp.contains("unsafe"), "{what}: {csp}");
    }
    // The policy lets exactly the served page's script run: its hash, nothing else.
    let page = &answers[0].1;
    let script = page
        .body
        .split_once("<script>")
        .and_then(|(_, rest)| rest.split_once("</script>"))
        .expect("the page's inline script")
        .0;
    assert_eq!(page.body.matches("<script").count(), 1, "one script");
    let csp = page.header("content-security-policy").unwrap();
    let script_src = csp
        .split(';')
        .find_map(|d| d.trim().strip_prefix("script-src "))
        .expect("a script-src");
    assert_eq!(
        script_src,
        sunray_dashboard::csp_hash(script),
        "script-src names the page's script and nothing else"
    );
    let style = page
        .body
        .split_once("<style>")
        .and_then(|(_, rest)| rest.split_once("</style>"))
        .unwrap()
        .0;
    let style_src = csp
        .split(';')
        .find_map(|d| d.trim().strip_prefix("style-src "))
        .expect("a style-src");
    assert!(
        style_src.contains(&sunray_dashboard::csp_hash(style)),
        "{style_src}"
    );
    d.kill().ok();
    d.wait().ok();
}

#[test]
fn wrong_tokens_are_throttled_per_address_and_the_right_one_works_after_the_wait() {
    let tmp = fresh_tmp();
    let token = "another-chosen-secret-0123456789";
    let (mut d, port) = standalone(&tmp, token, &["--secure-cookie"]);
    // A guesser sends a few hundred wrong tokens as fast as it can: the first few are
    // compared (401), then the rest are refused unread (429) with a Retry-After.
    let started = std::time::Instant::now();
    let mut checked = 0;
    let mut retry_after = None;
    for i in 0..300 {
        let r = http(port, "POST", "/login", &FORM, &format!("token=guess{i}"));
        match r.status {
            401 => checked += 1,
            429 => {
                let secs: u64 = r.header("retry-after").unwrap().parse().unwrap();
                assert!((1..=6).contains(&secs), "{secs}");
                assert!(r.body.contains("Too many wrong tokens"), "{}", r.body);
                retry_after = Some(secs);
            }
            s => panic!("{s}: {}", r.body),
        }
    }
    let elapsed = started.elapsed();
    // 10 at once, then one per 6 s.
    assert!(
        (10..=10 + elapsed.as_secs() / 6 + 1).contains(&checked),
        "{checked} guesses compared in {elapsed:?}"
    );
    // Now even the right token is not looked at, from this address, and neither is a
    // script's `Authorization: Bearer`.
    let right = http(port, "POST", "/login", &FORM, &format!("token={token}"));
    assert_eq!(right.status, 429);
    let bearer = format!("Bearer {token}");
    let api = http(
        port,
        "GET",
        "/api/experiments",
        &[("Authorization", &bearer)],
        "",
    );
    assert_eq!(api.status, 429, "{}", api.body);
    assert!(api.header("retry-after").is_some());
    // Another address is not locked out by this one's guesses.
    let other = http_from(
        connect_from("127.0.0.2", port),
        port,
        "POST",
        "/login",
        &FORM,
        &format!("token={token}"),
    );
    assert_eq!(other.status, 303, "{}", other.body);
    // After the wait the server named, the right token gets in (and the cookie lasts
    // 12 hours, Secure as asked).
    std::thread::sleep(std::time::Duration::from_secs(retry_after.unwrap()));
    let login = http(port, "POST", "/login", &FORM, &format!("token={token}"));
    assert_eq!(login.status, 303, "{}", login.body);
    let set_cookie = login.header("set-cookie").unwrap().to_lowercase();
    for attr in ["httponly", "samesite=strict", "max-age=43200", "secure"] {
        assert!(set_cookie.contains(attr), "{attr} in {set_cookie}");
    }
    // Wrong Bearer tokens from a script count as guesses too.
    let script = |source: &str, bearer: &str| {
        http_from(
            connect_from(source, port),
            port,
            "GET",
            "/api/experiments",
            &[("Authorization", bearer)],
            "",
        )
    };
    let statuses: Vec<u16> = (0..12)
        .map(|i| script("127.0.0.3", &format!("Bearer wrong-{i}")).status)
        .collect();
    assert_eq!(&statuses[..10], &[401; 10]);
    assert_eq!(&statuses[10..], &[429; 2]);
    d.kill().ok();
    d.wait().ok();
}

#[test]
fn a_dashboard_refuses_a_short_token_of_its_own() {
    let tmp = fresh_tmp();
    let file = tmp.join("token");
    std::fs::write(&file, "abc\n").unwrap();
    let mut d = sunray_in(
        &tmp,
        &[
            "dashboard",
            "--port",
            "0",
            "--results",
            tmp.to_str().unwrap(),
            "--token-file",
            file.to_str().unwrap(),
        ],
    )
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    // It must not serve: its first line would say where (and it would run on).
    let mut first = String::new();
    BufReader::new(d.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    if !first.is_empty() {
        d.kill().ok();
        d.wait().ok();
        panic!("it served with a 3-character token: {first}");
    }
    let out = d.wait_with_output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    // The same rule and words as `sunray start --token`, naming the file.
    assert!(
        err.contains("a cluster token must be at least 16 characters")
            && err.contains(file.to_str().unwrap()),
        "{err}"
    );
}
