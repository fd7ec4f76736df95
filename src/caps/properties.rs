//! Property tests for the capability model: no chain of attenuations, honest or
//! hand-crafted, verifies with more than its root grants; and no spelling trick
//! lets a cell's cap reach a sibling cell.

use ed25519_dalek::SigningKey;
use proptest::prelude::*;

use super::scope::Scope;
use super::token::{Right, Token, issue};

const CELL: &str = "apt/demo/dists/stable/main/binary-amd64";

fn root() -> SigningKey {
    SigningKey::from_bytes(&[42u8; 32])
}

/// Scopes around the demo repository: wider, equal, narrower and siblings.
fn any_scope() -> impl Strategy<Value = Scope> {
    prop_oneof![
        Just("apt"),
        Just("apt/demo"),
        Just("apt/other"),
        Just("apt/demo/dists"),
        Just("apt/demo/dists/stable"),
        Just("apt/demo/dists/testing"),
        Just("apt/demo/dists/stable/main"),
        Just("apt/demo/dists/stable/contrib"),
        Just(CELL),
        Just("apt/demo/dists/stable/main/binary-arm64"),
        Just("apt/demo/dists/testing/main/binary-amd64"),
    ]
    .prop_map(|s| s.parse().unwrap())
}

fn any_rights() -> impl Strategy<Value = Vec<Right>> {
    proptest::sample::subsequence(
        vec![Right::Upload, Right::Read, Right::Publish, Right::Admin],
        0..=4,
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Whatever blocks are appended (even ones a malicious holder signs by hand),
    /// a chain that verifies grants no more than its root block.
    #[test]
    fn attenuation_never_widens(
        root_scope in any_scope(),
        root_rights in any_rights(),
        steps in proptest::collection::vec((any_scope(), any_rights(), 0i64..2000, 0i64..2000), 1..5),
    ) {
        let root_exp = 1000;
        let mut token = issue(&root(), root_rights.clone(), &root_scope, 0, root_exp);
        let mut honest = true;
        let (mut scope, mut rights, mut exp, mut nbf) = (root_scope.clone(), root_rights.clone(), root_exp, 0);
        for (next_scope, next_rights, next_nbf, next_exp) in steps {
            let widens = !scope.covers(&next_scope)
                || next_rights.iter().any(|r| !rights.contains(r))
                || next_exp > exp
                || next_nbf < nbf;
            honest &= !widens && next_nbf <= next_exp;
            token = Token::parse(&token).unwrap().attenuate(next_rights.clone(), &next_scope, next_nbf, next_exp);
            (scope, rights, exp, nbf) = (next_scope, next_rights, next_exp, next_nbf);
        }
        let verified = Token::parse(&token).unwrap().verify(&root().verifying_key(), nbf.max(0));
        match verified {
            Ok(grant) => {
                prop_assert!(honest, "a widening chain verified");
                prop_assert!(root_scope.covers(&grant.scope));
                prop_assert!(grant.rights.iter().all(|r| root_rights.contains(r)));
                prop_assert!(grant.exp <= root_exp);
            }
            // An honest chain can still be refused for time reasons (nbf == exp, or now >= exp).
            Err(e) => prop_assert!(!honest || exp <= nbf.max(0), "honest chain refused: {e}"),
        }
    }

    /// A spelling variant of a cell path either fails to parse or is not inside the cell.
    #[test]
    fn sibling_spellings_never_reach_the_cell(position in 0usize..CELL.len(), trick in 0usize..8) {
        let mut variant: Vec<char> = CELL.chars().collect();
        let at = position.min(variant.len() - 1);
        match trick {
            0 => { variant.insert(at, '/'); variant.insert(at, '.'); variant.insert(at, '.'); }
            1 => { let c = variant[at]; variant.splice(at..=at, format!("%{:02X}", c as u32).chars()); }
            2 => { variant[at] = variant[at].to_ascii_uppercase(); }
            3 => { variant.push('/'); }
            4 => { variant[at] = match variant[at] { 'a' => 'а', 'e' => 'е', 'o' => 'о', 'p' => 'р', 'c' => 'с', other => other.to_ascii_uppercase() }; }
            5 => { variant.insert(at, '\u{200b}'); }
            6 => { variant.insert(at, ' '); }
            _ => { variant.truncate(at); variant.push('x'); }
        }
        let variant: String = variant.into_iter().collect();
        let cell: Scope = CELL.parse().unwrap();
        if let Ok(parsed) = variant.parse::<Scope>() {
            prop_assert!(variant == CELL || !cell.covers(&parsed) || parsed == cell,
                "{variant} parsed and lies inside {CELL}");
            prop_assert!(parsed.to_string() == variant, "parsing must not normalize {variant}");
        }
    }
}
