use proptest::prelude::*;

use super::*;

fn dev(pk: &str, dn: &str) -> DeviceKey {
    DeviceKey::parse(pk, dn).unwrap()
}

fn filter(f: &str) -> SubscribeFilter {
    SubscribeFilter::parse(f).unwrap()
}

#[test]
fn parses_every_family() {
    let d = dev("pk1", "dn1");
    let cases = [
        ("/sys/pk1/dn1/thing/event/property/post", Topic::sys(&d, "thing/event/property/post")),
        ("/pk1/dn1/user/update/error", Topic::Custom { device: d.clone(), short: "update/error".into() }),
        ("/ext/ntp/pk1/dn1/request", Topic::Ntp { device: d.clone(), direction: NtpDirection::Request }),
        ("/ext/session/pk1/dn1/combine/login", Topic::Session { device: d.clone(), path: "combine/login".into() }),
        (
            "/ext/rrpc/42/pk1/dn1/user/cmd",
            Topic::ExtRrpc { message_id: MessageId::new("42").unwrap(), device: d.clone(), short: "cmd".into() },
        ),
        ("/ext/error/pk1/dn1", Topic::ExtError { device: d.clone() }),
        ("/shadow/update/pk1/dn1", Topic::Shadow { device: d.clone(), op: ShadowOp::Update }),
        ("/shadow/get/pk1/dn1", Topic::Shadow { device: d.clone(), op: ShadowOp::Get }),
        (
            "/broadcast/pk1/news/today",
            Topic::Broadcast { product_key: ProductKey::new("pk1").unwrap(), suffix: "news/today".into() },
        ),
    ];
    for (raw, expected) in cases {
        let parsed = Topic::parse(raw).unwrap();
        assert_eq!(parsed, expected, "{raw}");
        assert_eq!(parsed.to_string(), raw);
    }
}

#[test]
fn refuses_topics_outside_the_grammar() {
    for raw in
        ["", "sys/pk/dn/x", "/sys/pk/dn", "/unknown", "/a/b/c", "/sys//dn/x", "/pk/dn/user/a+b", "/shadow/x/pk/dn"]
    {
        assert!(Topic::parse(raw).is_err(), "{raw}");
    }
    assert_eq!(Topic::parse(&format!("/{}", "a".repeat(600))), Err(TopicError::TooLong));
}

#[test]
fn classifies_sys_paths() {
    let d = dev("pk", "dn");
    assert_eq!(Topic::sys(&d, "thing/event/property/post").sys_kind(), Some(SysKind::PropertyPost));
    assert_eq!(Topic::sys(&d, "thing/event/alarm/post").sys_kind(), Some(SysKind::EventPost("alarm")));
    assert_eq!(Topic::sys(&d, "rrpc/response/7").sys_kind(), Some(SysKind::RrpcResponse("7")));
    assert_eq!(
        Topic::sys(&d, "thing/service/property/set_reply").sys_kind(),
        Some(SysKind::Reply("thing/service/property/set_reply"))
    );
    assert_eq!(
        Topic::sys(&d, "thing/event/property/post").alink_method().as_deref(),
        Some("thing.event.property.post")
    );
    assert_eq!(Topic::sys(&d, "thing/event/property/post").reply_topic(), "/sys/pk/dn/thing/event/property/post_reply");
}

#[test]
fn publish_acl() {
    let me = dev("pk", "dn");
    let classes = TopicClass::defaults();
    let allowed = |t: &str| may_publish(&me, &classes, &Topic::parse(t).unwrap());
    assert!(allowed("/sys/pk/dn/thing/event/property/post"));
    assert!(allowed("/pk/dn/user/update"));
    assert!(allowed("/pk/dn/user/update/error"));
    assert!(allowed("/ext/ntp/pk/dn/request"));
    assert!(allowed("/shadow/update/pk/dn"));
    assert!(allowed("/ext/rrpc/1/pk/dn/user/get"));
    assert!(!allowed("/pk/dn/user/get"), "SUB class is not publishable");
    assert!(!allowed("/pk/dn/user/nope"), "no such class");
    assert!(!allowed("/sys/pk/other/thing/event/property/post"), "another device");
    assert!(!allowed("/sys/pk2/dn/thing/event/property/post"), "another product");
    assert!(!allowed("/shadow/get/pk/dn"));
    assert!(!allowed("/broadcast/pk/x"));
    assert!(!allowed("/ext/ntp/pk/dn/response"));
}

#[test]
fn subscribe_acl() {
    let me = dev("pk", "dn");
    let classes = TopicClass::defaults();
    let allowed = |f: &str| may_subscribe(&me, &classes, &filter(f));
    for ok in [
        "/sys/pk/dn/thing/event/+/post_reply",
        "/sys/pk/dn/rrpc/request/+",
        "/sys/pk/dn/#",
        "/pk/dn/user/get",
        "/pk/dn/user/#",
        "/broadcast/pk/+",
        "/broadcast/pk/news",
        "/shadow/get/pk/dn",
        "/ext/ntp/pk/dn/response",
        "/ext/rrpc/+/pk/dn/user/get",
    ] {
        assert!(allowed(ok), "{ok}");
    }
    for denied in [
        "#",
        "/sys/#",
        "/sys/pk/+/thing/event/property/post",
        "/sys/pk/other/#",
        "/pk/dn/user/update",
        "/pk/other/user/get",
        "/broadcast/other/+",
        "/shadow/get/pk/other",
        "/+/dn/user/get",
    ] {
        assert!(!allowed(denied), "{denied}");
    }
}

#[test]
fn filter_relations() {
    assert!(filter("/a/b").is_covered_by(&filter("/a/+")));
    assert!(filter("/a/+").is_covered_by(&filter("/a/#")));
    assert!(!filter("/a/#").is_covered_by(&filter("/a/+")));
    assert!(!filter("/a/+").is_covered_by(&filter("/a/b")));
    assert!(filter("/a/+/c").overlaps(&filter("/a/b/#")));
    assert!(!filter("/a/x").overlaps(&filter("/a/y")));
    assert!(filter("/a/+").matches("/a/b"));
    assert!(!filter("/a/+").matches("/a/b/c"));
    assert!(filter("/a/#").matches("/a/b/c"));
    assert!(SubscribeFilter::parse("/a/#/b").is_err());
    assert!(SubscribeFilter::parse("/a/b+").is_err());
}

fn level() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9_-]{1,8}"
}

proptest! {
    #[test]
    fn topic_parse_never_panics(raw in ".{0,80}") {
        let _ = Topic::parse(&raw);
        if let Ok(f) = SubscribeFilter::parse(&raw) {
            let _ = f.matches(&raw);
            let _ = may_subscribe(&dev("pk", "dn"), &TopicClass::defaults(), &f);
        }
    }

    #[test]
    fn topic_parse_never_panics_on_slashes(levels in proptest::collection::vec("[a-z+#/]{0,4}", 0..8)) {
        let raw = format!("/{}", levels.join("/"));
        let _ = Topic::parse(&raw);
        let _ = SubscribeFilter::parse(&raw);
    }

    #[test]
    fn built_topics_parse_back(pk in level(), dn in level(), path in proptest::collection::vec(level(), 1..5)) {
        let device = dev(&pk, &dn);
        for topic in [
            Topic::sys(&device, path.join("/")),
            Topic::Custom { device: device.clone(), short: path.join("/") },
            Topic::Session { device: device.clone(), path: path.join("/") },
        ] {
            prop_assert_eq!(Topic::parse(&topic.to_string()), Ok(topic));
        }
    }

    #[test]
    fn covered_filters_match_what_they_cover(levels in proptest::collection::vec(prop_oneof![Just("+".to_string()), Just("a".to_string()), Just("b".to_string())], 1..5), topic in proptest::collection::vec(prop_oneof![Just("a"), Just("b")], 1..5)) {
        let narrow = filter(&levels.join("/"));
        let wide = filter(&format!("{}/#", levels[0]));
        let topic = topic.join("/");
        if narrow.is_covered_by(&wide) && narrow.matches(&topic) {
            prop_assert!(wide.matches(&topic));
        }
    }
}
