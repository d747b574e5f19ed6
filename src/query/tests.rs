use super::*;

fn condition(path: &str, op: Op, value: Literal) -> Filter {
    Filter::Condition(Condition {
        path: path.split('.').map(str::to_owned).collect(),
        op,
        value,
        position: 0,
        value_position: 0,
    })
}

/// Positions are checked by the error tests; here only the structure matters.
fn strip(filter: Filter) -> Filter {
    match filter {
        Filter::All(parts) => Filter::All(parts.into_iter().map(strip).collect()),
        Filter::Any(parts) => Filter::Any(parts.into_iter().map(strip).collect()),
        Filter::Condition(c) => Filter::Condition(Condition {
            position: 0,
            value_position: 0,
            ..c
        }),
    }
}

fn filter(query: &str) -> Filter {
    strip(
        parse(query)
            .unwrap_or_else(|e| panic!("{query}: {e}"))
            .filter
            .expect("a filter"),
    )
}

fn text(s: &str) -> Literal {
    Literal::Text(s.to_owned())
}

#[test]
fn every_operator() {
    let cases = [
        ("a=1", Op::Eq, text("1")),
        ("a==1", Op::Eq, text("1")),
        ("a=eq=1", Op::Eq, text("1")),
        ("a!=1", Op::Ne, text("1")),
        ("a=ne=1", Op::Ne, text("1")),
        ("a=lt=1", Op::Lt, text("1")),
        ("a=le=1", Op::Le, text("1")),
        ("a=gt=1", Op::Gt, text("1")),
        ("a=ge=1", Op::Ge, text("1")),
        ("a=sw=ab", Op::StartsWith, text("ab")),
        ("a=ct=ab", Op::Contains, text("ab")),
        ("a=ew=ab", Op::EndsWith, text("ab")),
        ("a==ab*", Op::StartsWith, Literal::String("ab".into())),
        ("a=ab*", Op::StartsWith, Literal::String("ab".into())),
        ("a=null", Op::Eq, Literal::Null),
        ("a==null", Op::Eq, Literal::Null),
        ("a!=null", Op::Ne, Literal::Null),
        ("a=number:12.5", Op::Eq, Literal::Number(12.5)),
        ("a==number:$1jl", Op::Eq, Literal::Number(2001.0)),
        ("a=boolean:true", Op::Eq, Literal::Bool(true)),
        ("a=string:007", Op::Eq, Literal::String("007".into())),
        ("a=date:1970-01-02", Op::Eq, Literal::Date(86_400_000)),
        ("a=a%26b%20c", Op::Eq, text("a&b c")),
        ("a=12:30", Op::Eq, text("12:30")),
        ("a=x%3Dy", Op::Eq, text("x=y")),
        ("dims.w=gt=2", Op::Gt, text("2")),
    ];
    for (query, op, value) in cases {
        let path = query.split(['=', '!']).next().unwrap_or_default();
        assert_eq!(filter(query), condition(path, op, value), "{query}");
    }
}

#[test]
fn joins_groups_and_ranges() {
    let a = || condition("a", Op::Eq, text("1"));
    let b = || condition("b", Op::Eq, text("2"));
    let c = || condition("c", Op::Eq, text("3"));
    assert_eq!(filter("a=1&b=2"), Filter::All(vec![a(), b()]));
    assert_eq!(filter("&a=1&&b=2&"), Filter::All(vec![a(), b()]));
    assert_eq!(filter("a=1|b=2"), Filter::Any(vec![a(), b()]));
    assert_eq!(
        filter("a=1&(b=2|c=3)"),
        Filter::All(vec![a(), Filter::Any(vec![b(), c()])])
    );
    assert_eq!(
        filter("a=1&[b=2|c=3]"),
        Filter::All(vec![a(), Filter::Any(vec![b(), c()])])
    );
    assert_eq!(
        filter("a=1&(b=2|[c=3&a=1])"),
        Filter::All(vec![
            a(),
            Filter::Any(vec![b(), Filter::All(vec![c(), a()])])
        ])
    );
    assert_eq!(filter("(a=1)"), a());
    assert_eq!(
        filter("price=gt=10&lt=20"),
        Filter::All(vec![
            condition("price", Op::Gt, text("10")),
            condition("price", Op::Lt, text("20"))
        ])
    );
}

#[test]
fn calls() {
    let query =
        parse("a=1&select(name,dims{w,h})&sort(-price,+name,id)&limit(5,15)").expect("parses");
    assert_eq!(
        query.select,
        Some(Select::Fields(vec![
            Field {
                name: "name".into(),
                children: vec![]
            },
            Field {
                name: "dims".into(),
                children: vec![
                    Field {
                        name: "w".into(),
                        children: vec![]
                    },
                    Field {
                        name: "h".into(),
                        children: vec![]
                    }
                ],
            },
        ]))
    );
    let sort: Vec<(String, bool)> = query
        .sort
        .iter()
        .map(|k| (k.path.join("."), k.descending))
        .collect();
    assert_eq!(
        sort,
        [
            ("price".into(), true),
            ("name".into(), false),
            ("id".into(), false)
        ]
    );
    assert_eq!((query.offset, query.limit), (5, Some(10)));

    assert_eq!(
        parse("select(name)").expect("parses").select,
        Some(Select::Value(vec!["name".into()]))
    );
    assert_eq!(
        parse("select(name,)").expect("parses").select,
        Some(Select::Fields(vec![Field {
            name: "name".into(),
            children: vec![]
        }]))
    );
    assert_eq!(
        parse("select(dims.w)").expect("parses").select,
        Some(Select::Value(vec!["dims".into(), "w".into()]))
    );
    assert_eq!(
        parse("select(id,dims.w)").expect("parses").select,
        Some(Select::Fields(vec![
            Field {
                name: "id".into(),
                children: vec![]
            },
            Field {
                name: "dims".into(),
                children: vec![Field {
                    name: "w".into(),
                    children: vec![]
                }]
            },
        ]))
    );
    assert_eq!(parse("limit(3)").expect("parses").limit, Some(3));
    assert_eq!(parse("limit(3,3)").expect("parses").limit, Some(0));
    assert!(!parse("sort(%2Bprice)").expect("parses").sort[0].descending);
    assert_eq!(parse("").expect("parses"), Query::default());
}

#[test]
fn nesting_is_bounded() {
    let deep = |n: usize| format!("{}a=1{}", "(".repeat(n), ")".repeat(n));
    assert!(parse(&deep(32)).is_ok());
    let error = parse(&deep(100_000)).expect_err("too deep");
    assert_eq!((error.position, error.token.as_str()), (32, "("));
    let braces = format!("select(a{}b{})", "{a".repeat(40), "}".repeat(40));
    assert!(parse(&braces).is_err());
}

#[test]
fn errors_name_position_and_token() {
    let cases = [
        ("price=gt=", 9, ""),
        ("name=*lamp", 5, "*lamp"),
        ("price=gt=3*", 9, "3*"),
        ("a=number:x", 2, "number:x"),
        ("a=boolean:yes", 2, "boolean:yes"),
        ("a=date:soon", 2, "date:soon"),
        ("a=gt=null", 5, "null"),
        ("(a=1", 4, ""),
        ("a=1)", 3, ")"),
        ("[a=1)", 4, ")"),
        ("a=1&b=2|c=3", 7, "|"),
        ("a=1|b=2&c=3", 7, "&"),
        ("limit(abc)", 6, "abc"),
        ("limit(5,2)", 8, "2"),
        ("limit(1,2,3)", 6, "1,2,3"),
        ("limit()", 6, ""),
        ("limit(-1)", 6, "-1"),
        ("limit(1)&limit(2)", 9, "limit"),
        ("frobnicate(1)", 0, "frobnicate"),
        ("(sort(a))", 1, "sort"),
        ("a=1|limit(2)", 4, "limit"),
        ("limit(2)|a=1", 8, "|"),
        ("sort()", 5, ""),
        ("sort(-)", 5, "-"),
        ("select()", 7, ""),
        ("select(a{b)", 10, ")"),
        ("=3", 0, "="),
        ("a", 1, ""),
        ("a<3", 1, "<"),
        ("a..b=1", 0, "a..b"),
        ("a=%FF", 2, "%FF"),
        ("price=xx=3", 6, "xx"),
        ("price=GT=3", 6, "GT"),
        ("()", 0, ""),
        ("a=sw=number:3", 5, ""),
    ];
    for (query, position, token) in cases {
        let error = parse(query).expect_err(query);
        assert_eq!(
            (error.position, error.token.as_str()),
            (position, token),
            "{query}: {error}"
        );
        assert!(!error.expected.is_empty());
    }
}
