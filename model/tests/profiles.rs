//! The profile table: every release the model knows is found by name and printed by name.

use model::KernelProfile;

#[test]
fn every_release_is_listed_found_by_name_and_printed_as_it() {
    let all = KernelProfile::all();
    let names: Vec<&str> = all.iter().map(|p| p.name).collect();
    for era in ["6.1", "6.12", "6.18"] {
        assert!(names.contains(&era), "{era} missing from {names:?}");
    }
    assert_eq!(names.first(), Some(&"6.1"), "oldest first");
    for p in &all {
        assert_eq!(KernelProfile::by_name(p.name).as_ref(), Some(p));
        assert_eq!(p.to_string(), p.name);
    }
    assert_eq!(KernelProfile::by_name("6.0"), None);
    assert_eq!(KernelProfile::default(), KernelProfile::v6_18());
}
