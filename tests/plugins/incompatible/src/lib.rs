//! A component implementing a contract version the host does not support.

wit_bindgen::generate!({ world: "plugin", path: "wit" });

struct Future;

impl exports::autoglm::plugin::tools::Guest for Future {
    fn call(_: String, _: String, _: String) -> Result<String, String> {
        Ok("{}".to_string())
    }
}

export!(Future);
