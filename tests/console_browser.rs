//! The console in a real browser: Debian's chromium, headless, driven over
//! WebDriver by chromedriver. Logs in with the token, watches calls appear
//! on Live without a reload (a display name with markup shown as text),
//! opens a call's detail, denies the number from there and sees the next
//! call rejected. Each page is saved as a screenshot under
//! `target/console-screenshots/`.

mod common;

#[path = "common/binary.rs"]
mod binary;
#[path = "common/operator.rs"]
mod operator;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::Udp;
use fantoccini::{Client, ClientBuilder, Locator};
use operator::{Operator, TOKEN};

/// chromedriver on a port of its own, killed when dropped.
struct Driver {
    child: Child,
    url: String,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn chromedriver() -> Option<&'static str> {
    ["chromedriver", "/usr/lib/chromium/chromedriver"]
        .into_iter()
        .find(|c| {
            Command::new(c)
                .arg("--version")
                .output()
                .is_ok_and(|o| o.status.success())
        })
}

async fn start_driver(bin: &str) -> Driver {
    let port = binary::free_port();
    let child = Command::new(bin)
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start chromedriver");
    let url = format!("http://127.0.0.1:{port}");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_err()
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "chromedriver did not listen"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Driver { child, url }
}

async fn browser(driver: &Driver) -> Client {
    let chromium = ["/usr/bin/chromium", "/usr/bin/chromium-browser"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
        .unwrap_or("chromium");
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        serde_json::json!({
            "binary": chromium,
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                     "--disable-dev-shm-usage", "--window-size=1360,1000"],
        }),
    );
    ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(caps)
        .connect(&driver.url)
        .await
        .expect("a chromium session")
}

fn screenshots() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/console-screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

async fn save(c: &Client, name: &str) {
    let png = c.screenshot().await.unwrap();
    std::fs::write(screenshots().join(format!("{name}.png")), png).unwrap();
}

/// Waits until `f` finds what it looks for.
async fn eventually<T, F, Fut>(what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(tokio::time::Instant::now() < deadline, "never saw {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_operator_logs_in_watches_calls_live_and_denies_a_caller_from_its_detail() {
    let Some(driver_bin) = chromedriver() else {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "chromedriver is not installed (.ci/run installs chromium-driver)"
        );
        eprintln!(
            "skipped: chromedriver is not installed (apt-get install chromium chromium-driver)"
        );
        return;
    };
    let op = Operator::start(
        "[policy]\nreject_code = 607\nallow = []\ndeny = [\"+1666*\"]\n",
        Some(TOKEN),
    )
    .await;
    // Something for the charts and the top lists.
    let uac = Udp::new().await;
    for i in 0..3 {
        op.call(&uac, &format!("warm{i}"), "<sip:+16660000001@c>")
            .await;
        op.call(
            &uac,
            &format!("warm-pass{i}"),
            &format!("<sip:+1555000000{i}@c>"),
        )
        .await;
    }
    let driver = start_driver(driver_bin).await;
    let c = browser(&driver).await;

    // Log in: the console sends us to the form first.
    c.goto(&format!("{}/", op.admin)).await.unwrap();
    assert!(c.current_url().await.unwrap().path().ends_with("/login"));
    save(&c, "login").await;
    c.find(Locator::Css("#token"))
        .await
        .unwrap()
        .send_keys(TOKEN)
        .await
        .unwrap();
    c.find(Locator::Css("button[type=submit]"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    eventually("the overview", || async {
        let title = c.title().await.ok()?;
        title.starts_with("Overview").then_some(())
    })
    .await;
    let overview = c.source().await.unwrap();
    assert!(overview.contains("+16660000001"), "the top rejected caller");
    save(&c, "overview").await;

    // Live: calls appear without reloading, markup in a name as text.
    c.goto(&format!("{}/live", op.admin)).await.unwrap();
    eventually("the stream connected", || async {
        let s = c
            .find(Locator::Css("#status"))
            .await
            .ok()?
            .text()
            .await
            .ok()?;
        (s == "live").then_some(())
    })
    .await;
    let hostile = "<img src=x onerror=alert(1)>Mallory";
    op.call(
        &uac,
        "live1",
        &format!("\"{hostile}\" <sip:+15557650001@carrier.example>"),
    )
    .await;
    op.call(&uac, "live2", "<sip:+16660000002@c>").await;
    let rows = eventually("two calls on Live", || async {
        let rows = c.find_all(Locator::Css("#live tbody tr")).await.ok()?;
        (rows.len() >= 2).then_some(rows)
    })
    .await;
    let name = eventually("the display name", || async {
        let cells = c.find_all(Locator::Css("#live tbody td.name")).await.ok()?;
        for cell in cells {
            let t = cell.text().await.ok()?;
            if t.contains("Mallory") {
                return Some(t);
            }
        }
        None
    })
    .await;
    assert_eq!(name, hostile, "the markup is shown as text");
    assert!(
        c.find_all(Locator::Css("#live img"))
            .await
            .unwrap()
            .is_empty(),
        "no element was made from the caller's text"
    );
    assert!(rows.len() >= 2);
    let reject_row = c
        .find(Locator::Css("#live tbody tr.action-reject"))
        .await
        .expect("the rejected call, coloured by action");
    assert!(reject_row.text().await.unwrap().contains("+16660000002"));
    save(&c, "live").await;

    // Pause holds new decisions back.
    c.find(Locator::Css("#pause"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let before = c
        .find_all(Locator::Css("#live tbody tr"))
        .await
        .unwrap()
        .len();
    op.call(&uac, "live3", "<sip:+15557650003@c>").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        c.find_all(Locator::Css("#live tbody tr"))
            .await
            .unwrap()
            .len(),
        before,
        "paused"
    );
    c.find(Locator::Css("#pause"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    eventually("the held call after resume", || async {
        let n = c.find_all(Locator::Css("#live tbody tr")).await.ok()?.len();
        (n > before).then_some(())
    })
    .await;

    // The detail of Mallory's call, and deny from there.
    let link = eventually("Mallory's row", || async {
        for row in c.find_all(Locator::Css("#live tbody tr")).await.ok()? {
            if row.text().await.ok()?.contains("+15557650001") {
                return row.find(Locator::Css("a")).await.ok();
            }
        }
        None
    })
    .await;
    link.click().await.unwrap();
    eventually("the call's detail", || async {
        let title = c.title().await.ok()?;
        title.starts_with("Call").then_some(())
    })
    .await;
    let detail = c.source().await.unwrap();
    assert!(detail.contains("486 after"), "the PBX's final response");
    assert!(!detail.contains("<img src=x"), "escaped on the detail too");
    save(&c, "detail").await;
    c.find(Locator::Css("#deny-number"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    eventually("the deny confirmed", || async {
        let url = c.current_url().await.ok()?;
        url.query().unwrap_or("").contains("done=").then_some(())
    })
    .await;
    let standing = c
        .find(Locator::Css("#standing"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(standing.contains("on the deny list"), "{standing}");
    save(&c, "detail-denied").await;
    let (code, relayed) = op.call(&uac, "after-deny", "<sip:+15557650001@c>").await;
    assert_eq!(
        (code, relayed.is_none()),
        (607, true),
        "the next call is rejected"
    );

    c.goto(&format!("{}/history?number=%2B15557650001", op.admin))
        .await
        .unwrap();
    let history = c.source().await.unwrap();
    assert!(history.contains("denylist"));
    save(&c, "history").await;
    c.goto(&format!("{}/lists", op.admin)).await.unwrap();
    let lists = c
        .find(Locator::Css("#list-deny"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        lists.contains("+15557650001") && lists.contains("+1666*"),
        "{lists}"
    );
    save(&c, "lists").await;
    c.close().await.unwrap();
}
