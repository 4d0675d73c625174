//! `connector query COLLECTION [ID]`: documents from the store, `_id` first.

use serde_json::{Map, Value};

use connector_core::value::parse_id_arg;

use super::{Context, Failure, Outcome};

fn with_id(id: Value, doc: Map<String, Value>) -> Value {
    let mut out = Map::new();
    out.insert("_id".into(), id);
    out.extend(doc);
    Value::Object(out)
}

pub fn run(ctx: &Context, collection: &str, id: Option<&str>, limit: usize) -> Outcome {
    let Some(store) = ctx.existing_store()? else {
        return match id {
            Some(_) => Err(Failure::new(format!(
                "not found: the store {} is empty",
                ctx.config.store_path.display()
            ))),
            None => {
                println!("[]");
                Ok(0)
            }
        };
    };
    match id {
        Some(text) => {
            let id = parse_id_arg(text);
            match store.get(collection, &id)? {
                Some(doc) => {
                    println!("{}", serde_json::to_string_pretty(&with_id(id, doc))?);
                    Ok(0)
                }
                None => Err(Failure::new(format!(
                    "not found: {collection} {}",
                    serde_json::to_string(&id)?
                ))),
            }
        }
        None => {
            let docs: Vec<Value> = store
                .list(collection, None, limit)?
                .into_iter()
                .map(|(id, doc)| with_id(id, doc))
                .collect();
            println!("{}", serde_json::to_string_pretty(&docs)?);
            Ok(0)
        }
    }
}
