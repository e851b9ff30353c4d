//! casesync's phone client: `sync-core` for wasm32 with a small typed JS
//! API. The engine stays in Rust; the JS glue (`js/`) only does IO: the
//! WebSocket, IndexedDB, token renewal, and passing `now` and random bytes.
//!
//! Architecture invariant: no domain logic here. Methods convert arguments,
//! call `sync-core`, and turn errors into JS errors.

pub mod client;
pub mod edit;

use wasm_bindgen::prelude::*;

fn js_err(e: impl std::fmt::Display) -> JsError {
    JsError::new(&e.to_string())
}

/// Every section field and collection with its kind, and the statuses, as a
/// JSON string (see `client::schema`).
#[wasm_bindgen]
pub fn schema() -> String {
    client::schema().to_string()
}

/// One signed-in device, as JS sees it.
#[wasm_bindgen]
#[derive(Debug)]
pub struct CasesyncClient {
    inner: client::Client,
}

#[wasm_bindgen]
impl CasesyncClient {
    /// Signs in with a token. `actor` is 16 random bytes the device keeps.
    #[wasm_bindgen(constructor)]
    pub fn new(token: &str, storage_id: &str, actor: &[u8]) -> Result<CasesyncClient, JsError> {
        client::Client::new(token, storage_id, actor)
            .map(|inner| Self { inner })
            .map_err(js_err)
    }

    #[wasm_bindgen(js_name = peerId)]
    pub fn peer_id(&self) -> String {
        self.inner.peer_id()
    }

    pub fn user(&self) -> String {
        self.inner.user()
    }

    pub fn actor(&self) -> String {
        self.inner.actor()
    }

    #[wasm_bindgen(js_name = openNew)]
    pub fn open_new(&mut self, url: &str) -> Result<(), JsError> {
        self.inner.open_new(url).map_err(js_err)
    }

    #[wasm_bindgen(js_name = openSaved)]
    pub fn open_saved(
        &mut self,
        url: &str,
        bytes: &[u8],
        sync_state: Option<Vec<u8>>,
    ) -> Result<(), JsError> {
        self.inner
            .open_saved(url, bytes, sync_state)
            .map_err(js_err)
    }

    pub fn documents(&self) -> Vec<String> {
        self.inner.documents()
    }

    pub fn connected(&mut self) {
        self.inner.connected();
    }

    pub fn disconnected(&mut self) {
        self.inner.disconnected();
    }

    #[wasm_bindgen(js_name = isConnected)]
    pub fn is_connected(&self) -> bool {
        self.inner.is_connected()
    }

    pub fn receive(&mut self, frame: &[u8]) -> Result<(), JsError> {
        self.inner.receive(frame).map_err(js_err)
    }

    #[wasm_bindgen(js_name = pollTransmit)]
    pub fn poll_transmit(&mut self) -> Option<Vec<u8>> {
        self.inner.poll_transmit()
    }

    /// Events since the last call, as a JSON array string.
    #[wasm_bindgen(js_name = takeEvents)]
    pub fn take_events(&mut self) -> String {
        serde_json::Value::Array(self.inner.take_events()).to_string()
    }

    #[wasm_bindgen(js_name = takeDirty)]
    pub fn take_dirty(&mut self) -> Vec<String> {
        self.inner.take_dirty()
    }

    pub fn save(&self, url: &str) -> Result<Vec<u8>, JsError> {
        self.inner.save(url).map_err(js_err)
    }

    /// The sync state to store with the document (IndexedDB).
    #[wasm_bindgen(js_name = syncState)]
    pub fn sync_state(&self, url: &str) -> Result<Option<Vec<u8>>, JsError> {
        self.inner.sync_state(url).map_err(js_err)
    }

    /// Applies an edit given as JSON; returns the change hash or undefined.
    pub fn edit(
        &mut self,
        url: &str,
        edit_json: &str,
        now_ms: f64,
    ) -> Result<Option<String>, JsError> {
        // JS numbers hold milliseconds exactly up to 2^53.
        #[allow(clippy::cast_possible_truncation)]
        let now = now_ms as i64;
        self.inner.edit(url, edit_json, now).map_err(js_err)
    }

    /// The case, its conflicts and sync counters, as a JSON string.
    pub fn read(&self, url: &str) -> Result<String, JsError> {
        self.inner.read(url).map(|v| v.to_string()).map_err(js_err)
    }

    /// `{online, unacknowledged}` as a JSON string.
    pub fn status(&self) -> String {
        self.inner.status().to_string()
    }
}
