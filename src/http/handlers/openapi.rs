//! `GET /openapi.json`

use actix_web::{HttpResponse, web};

use crate::app::AppState;

pub async fn document(state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok().json(crate::http::openapi::document(state.clock.is_adjustable()))
}
