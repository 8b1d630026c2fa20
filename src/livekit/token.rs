//! LiveKit access tokens, minted with `livekit-api`.

use std::time::Duration;

use livekit_api::access_token::{AccessToken, VideoGrants};

use crate::config::LiveKitConfig;
use crate::error::AppError;

/// A join token for `room` as `identity`: join + publish + subscribe (+ data), nothing else.
pub fn mint_join_token(config: &LiveKitConfig, room: &str, identity: &str, ttl: Duration) -> Result<String, AppError> {
    let grants = VideoGrants {
        room_join: true,
        room: room.to_owned(),
        can_publish: Some(true),
        can_subscribe: Some(true),
        can_publish_data: Some(true),
        ..Default::default()
    };
    AccessToken::with_api_key(&config.api_key, config.api_secret.expose())
        .with_identity(identity)
        .with_name(identity)
        .with_grants(grants)
        .with_ttl(ttl)
        .to_jwt()
        .map_err(AppError::internal)
}
