//! Locations (with the numbers that reach them) and the SIDs of the Twilio
//! resources `provision` made: written rarely, through sqlx's writer; read
//! on every call.

use anyhow::Context as _;
use sqlx::Row;

use super::{Store, now_ms};
use crate::domain::{Location, LocationSpec};

impl Store {
    /// Inserts or replaces a location. The spec must already be checked.
    pub async fn upsert_location(&self, spec: &LocationSpec) -> anyhow::Result<()> {
        let loc = Location::from_spec(spec.clone()).context("storing an unchecked location")?;
        let json = serde_json::to_string(spec)?;
        let mut tx = self.writer.begin().await?;
        sqlx::query(
            "INSERT INTO locations (name, spec_json, updated_at_ms) VALUES ($1, $2, $3)
             ON CONFLICT (name) DO UPDATE SET spec_json = excluded.spec_json, updated_at_ms = excluded.updated_at_ms",
        )
        .bind(&loc.name)
        .bind(&json)
        .bind(now_ms())
        .execute(&mut *tx)
        .await?;
        sqlx::query("DELETE FROM location_numbers WHERE location = $1").bind(&loc.name).execute(&mut *tx).await?;
        for n in &loc.numbers {
            sqlx::query("INSERT INTO location_numbers (number, location) VALUES ($1, $2)")
                .bind(n.as_str())
                .bind(&loc.name)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Removes a location; false when there was none of that name.
    pub async fn remove_location(&self, name: &str) -> anyhow::Result<bool> {
        let mut tx = self.writer.begin().await?;
        sqlx::query("DELETE FROM location_numbers WHERE location = $1").bind(name).execute(&mut *tx).await?;
        let done = sqlx::query("DELETE FROM locations WHERE name = $1").bind(name).execute(&mut *tx).await?;
        tx.commit().await?;
        Ok(done.rows_affected() > 0)
    }

    pub async fn location_specs(&self) -> anyhow::Result<Vec<LocationSpec>> {
        let rows = sqlx::query("SELECT spec_json FROM locations ORDER BY name").fetch_all(&self.pool).await?;
        rows.iter().map(|r| Ok(serde_json::from_str(&r.try_get::<String, _>("spec_json")?)?)).collect()
    }

    pub async fn locations(&self) -> anyhow::Result<Vec<Location>> {
        self.location_specs().await?.into_iter().map(stored_location).collect()
    }

    pub async fn location(&self, name: &str) -> anyhow::Result<Option<Location>> {
        let row = sqlx::query("SELECT spec_json FROM locations WHERE name = $1")
            .bind(name)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| stored_location(serde_json::from_str(&r.try_get::<String, _>("spec_json")?)?)).transpose()
    }

    /// The locations a Twilio number serves, ordered by menu digit.
    pub async fn locations_for_number(&self, number: &str) -> anyhow::Result<Vec<Location>> {
        let rows = sqlx::query(
            "SELECT l.spec_json FROM locations l JOIN location_numbers n ON n.location = l.name
             WHERE n.number = $1 ORDER BY l.name",
        )
        .bind(number)
        .fetch_all(&self.pool)
        .await?;
        let mut locs = rows
            .iter()
            .map(|r| stored_location(serde_json::from_str(&r.try_get::<String, _>("spec_json")?)?))
            .collect::<anyhow::Result<Vec<_>>>()?;
        locs.sort_by_key(|l| (l.digit, l.name.clone()));
        Ok(locs)
    }

    // -- Twilio resource SIDs ---------------------------------------------

    pub async fn set_resource(&self, kind: &str, key: &str, sid: &str) -> anyhow::Result<()> {
        sqlx::query(
            "INSERT INTO twilio_resources (kind, key, sid, updated_at_ms) VALUES ($1, $2, $3, $4)
             ON CONFLICT (kind, key) DO UPDATE SET sid = excluded.sid, updated_at_ms = excluded.updated_at_ms",
        )
        .bind(kind)
        .bind(key)
        .bind(sid)
        .bind(now_ms())
        .execute(&self.writer)
        .await?;
        Ok(())
    }

    pub async fn resource(&self, kind: &str, key: &str) -> anyhow::Result<Option<String>> {
        let row = sqlx::query("SELECT sid FROM twilio_resources WHERE kind = $1 AND key = $2")
            .bind(kind)
            .bind(key)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|r| r.try_get("sid")).transpose()?)
    }

    pub async fn remove_resource(&self, kind: &str, key: &str) -> anyhow::Result<()> {
        sqlx::query("DELETE FROM twilio_resources WHERE kind = $1 AND key = $2")
            .bind(kind)
            .bind(key)
            .execute(&self.writer)
            .await?;
        Ok(())
    }

    /// Every stored resource as (kind, key, sid).
    pub async fn resources(&self) -> anyhow::Result<Vec<(String, String, String)>> {
        let rows =
            sqlx::query("SELECT kind, key, sid FROM twilio_resources ORDER BY kind, key").fetch_all(&self.pool).await?;
        rows.iter().map(|r| Ok((r.try_get("kind")?, r.try_get("key")?, r.try_get("sid")?))).collect()
    }

    /// The names of the locations, in order (without parsing their specs).
    pub async fn location_names(&self) -> anyhow::Result<Vec<String>> {
        let rows = sqlx::query("SELECT name FROM locations ORDER BY name").fetch_all(&self.pool).await?;
        rows.iter().map(|r| Ok(r.try_get("name")?)).collect()
    }

    /// Every Twilio number that serves a location.
    pub async fn numbers(&self) -> anyhow::Result<Vec<String>> {
        let rows =
            sqlx::query("SELECT DISTINCT number FROM location_numbers ORDER BY number").fetch_all(&self.pool).await?;
        rows.iter().map(|r| Ok(r.try_get("number")?)).collect()
    }
}

/// Rebuilds a stored location. It was fully checked when stored; the
/// numbering-plan check is not repeated on this hot path.
fn stored_location(spec: LocationSpec) -> anyhow::Result<Location> {
    Location::from_stored(spec).context("a stored location no longer parses")
}
