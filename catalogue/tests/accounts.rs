//! Operator accounts on SQLite and PostgreSQL: argon2id hashes, sessions stored by their
//! hash, CSRF on changes made with a session, logins limited per address and per account,
//! and the `Operator` extractor taking a session cookie.

mod support;

use std::net::IpAddr;

use catalogue::accounts::{LoginError, csrf_matches};
use reqwest::StatusCode;
use serde_json::json;
use support::{Db, Harness};

on_both!(accounts_sessions_and_limits);

async fn accounts_sessions_and_limits(db: Db) {
    let h = Harness::start(db, |s| {
        s.login_per_account = 3;
        s.login_per_address = 5;
    })
    .await;
    let c = &h.catalogue;
    assert!(!c.has_operators().await.unwrap());
    assert!(matches!(
        c.add_operator("zhang", "short", false).await,
        Err(catalogue::Error::Invalid(_))
    ));
    assert!(matches!(
        c.add_operator("bad name!", "long enough password", false)
            .await,
        Err(catalogue::Error::Invalid(_))
    ));
    c.add_operator("zhang", "long enough password", false)
        .await
        .unwrap();
    assert!(matches!(
        c.add_operator("zhang", "another password", false).await,
        Err(catalogue::Error::Conflict(_))
    ));
    assert!(c.has_operators().await.unwrap());

    let ip: IpAddr = [192, 0, 2, 1].into();
    assert_eq!(
        c.login("zhang", "wrong password", ip).await.unwrap_err(),
        LoginError::Wrong
    );
    assert_eq!(
        c.login("nobody", "long enough password", ip)
            .await
            .unwrap_err(),
        LoginError::Wrong
    );
    let s = c.login("zhang", "long enough password", ip).await.unwrap();
    assert_eq!(s.cookie.len(), 64);
    // Only the session's hash is stored.
    let session = c.session(&s.cookie).await.unwrap().expect("a session");
    assert_eq!(session.operator.name, "zhang");
    assert!(csrf_matches(&session, &s.csrf) && !csrf_matches(&session, ""));
    assert!(c.session(&"0".repeat(64)).await.unwrap().is_none());

    // The API takes the cookie: reads as is, changes with the CSRF token only.
    let cookie = format!("jt_session={}", s.cookie);
    let get = h
        .http
        .get(h.url("/api/v1/lectures?include_private=true"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(get.status(), StatusCode::OK);
    let hall = json!({"name": "会话讲堂"});
    let without = h
        .http
        .post(h.url("/api/v1/halls"))
        .header("cookie", &cookie)
        .json(&hall)
        .send()
        .await
        .unwrap();
    assert_eq!(without.status(), StatusCode::FORBIDDEN);
    let with = h
        .http
        .post(h.url("/api/v1/halls"))
        .header("cookie", &cookie)
        .header("x-csrf-token", &s.csrf)
        .json(&hall)
        .send()
        .await
        .unwrap();
    assert_eq!(with.status(), StatusCode::CREATED);

    // Per account: a fourth attempt within the minute is refused, whatever its address.
    let other: IpAddr = [192, 0, 2, 2].into();
    c.login("zhang", "long enough password", other)
        .await
        .unwrap();
    assert_eq!(
        c.login("zhang", "long enough password", other)
            .await
            .unwrap_err(),
        LoginError::TooMany
    );
    // Per address: the first address has used 3 of 5; two more names, then refused.
    c.add_operator("li", "long enough password", false)
        .await
        .unwrap();
    c.add_operator("wang", "long enough password", false)
        .await
        .unwrap();
    c.login("li", "long enough password", ip).await.unwrap();
    c.login("wang", "long enough password", ip).await.unwrap();
    assert_eq!(
        c.login("wang", "long enough password", ip)
            .await
            .unwrap_err(),
        LoginError::TooMany
    );

    // A new password ends the sessions; logging out ends one.
    c.add_operator("zhang", "a brand new password", true)
        .await
        .unwrap();
    assert!(c.session(&s.cookie).await.unwrap().is_none());
    let names: Vec<String> = c
        .operators()
        .await
        .unwrap()
        .into_iter()
        .map(|o| o.name)
        .collect();
    assert_eq!(names, ["li", "wang", "zhang"]);
    h.stop().await;
}
