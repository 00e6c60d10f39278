//! The SDK README's example is the weather sample plugin, which `just plugins` builds:
//! keep the two identical so the documented example always compiles.

#[test]
fn readme_example_is_the_weather_plugin() {
    let readme = include_str!("../README.md");
    let example = readme
        .split("```rust,ignore\n")
        .nth(1)
        .and_then(|rest| rest.split("```").next())
        .expect("README has a ```rust,ignore example");
    let plugin = include_str!("../../sample-plugins/weather/src/lib.rs");
    assert_eq!(example, plugin, "update plugins-sdk/README.md to match sample-plugins/weather");
}
