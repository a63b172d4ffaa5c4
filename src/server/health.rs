//! Health under load: NOT_SERVING while every search slot is taken, so
//! that balancers steer new work elsewhere instead of seeing SERVING from a
//! server that sheds everything.

use super::SERVICES;
use super::service::State;
use std::sync::Arc;
use std::time::Duration;
use tonic_health::ServingStatus;

/// Health follows saturation: NOT_SERVING while every search slot is taken,
/// SERVING again once at most three quarters are (hysteresis, so health
/// does not flap at the edge). Checked every 50 ms.
pub(super) async fn watch_saturation(st: Arc<State>, health: tonic_health::server::HealthReporter) {
    let max = st.engine.max_in_flight();
    let low = max * 3 / 4;
    let mut saturated = false;
    let mut tick = tokio::time::interval(Duration::from_millis(50));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let n = st.engine.in_flight();
        let now = if saturated { n > low } else { n >= max };
        if now != saturated {
            saturated = now;
            st.metrics.set_saturated(now);
            let status = if now { ServingStatus::NotServing } else { ServingStatus::Serving };
            if now {
                tracing::warn!("saturated: {n} of {max} search slots taken; health NOT_SERVING");
            } else {
                tracing::info!("no longer saturated ({n} of {max}); health SERVING");
            }
            for s in SERVICES {
                health.set_service_status(s, status).await;
            }
        }
    }
}
