//! Fly's public regions: the names, locations and areas Fly gives its codes, so that a
//! platform whose hosts use those codes describes them as Fly does
//! (`/v1/platform/regions`). Other codes are the operator's own.

/// What Fly says about one of its region codes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FlyRegion {
    pub code: &'static str,
    pub name: &'static str,
    pub latitude: f32,
    pub longitude: f32,
    /// `africa`, `asia_pacific`, `europe`, `north_america` or `south_america`.
    pub geo_region: &'static str,
    /// Whether Fly runs a WireGuard gateway there.
    pub gateway: bool,
}

const fn region(
    code: &'static str,
    name: &'static str,
    latitude: f32,
    longitude: f32,
    geo_region: &'static str,
    gateway: bool,
) -> FlyRegion {
    FlyRegion {
        code,
        name,
        latitude,
        longitude,
        geo_region,
        gateway,
    }
}

/// Fly's 18 public regions (its regions reference page).
pub const FLY_REGIONS: [FlyRegion; 18] = [
    region("ams", "Amsterdam, Netherlands", 52.37, 4.90, "europe", true),
    region("arn", "Stockholm, Sweden", 59.65, 17.93, "europe", true),
    region("bom", "Mumbai, India", 19.09, 72.87, "asia_pacific", true),
    region("cdg", "Paris, France", 48.86, 2.35, "europe", true),
    region(
        "dfw",
        "Dallas, Texas (US)",
        32.78,
        -96.80,
        "north_america",
        true,
    ),
    region(
        "ewr",
        "Secaucus, NJ (US)",
        40.79,
        -74.06,
        "north_america",
        true,
    ),
    region("fra", "Frankfurt, Germany", 50.11, 8.68, "europe", true),
    region(
        "gru",
        "Sao Paulo, Brazil",
        -23.55,
        -46.63,
        "south_america",
        false,
    ),
    region(
        "iad",
        "Ashburn, Virginia (US)",
        39.04,
        -77.49,
        "north_america",
        true,
    ),
    region(
        "jnb",
        "Johannesburg, South Africa",
        -26.20,
        28.04,
        "africa",
        false,
    ),
    region(
        "lax",
        "Los Angeles, California (US)",
        33.94,
        -118.41,
        "north_america",
        true,
    ),
    region(
        "lhr",
        "London, United Kingdom",
        51.51,
        -0.13,
        "europe",
        true,
    ),
    region("nrt", "Tokyo, Japan", 35.62, 139.74, "asia_pacific", true),
    region(
        "ord",
        "Chicago, Illinois (US)",
        41.89,
        -87.63,
        "north_america",
        true,
    ),
    region(
        "sin",
        "Singapore, Singapore",
        1.35,
        103.99,
        "asia_pacific",
        true,
    ),
    region(
        "sjc",
        "San Jose, California (US)",
        37.35,
        -121.96,
        "north_america",
        true,
    ),
    region(
        "syd",
        "Sydney, Australia",
        -33.87,
        151.21,
        "asia_pacific",
        true,
    ),
    region(
        "yyz",
        "Toronto, Canada",
        43.68,
        -79.63,
        "north_america",
        true,
    ),
];

/// Fly's description of `code`, when it is one of Fly's regions.
pub fn fly_region(code: &str) -> Option<&'static FlyRegion> {
    FLY_REGIONS.iter().find(|r| r.code == code)
}

/// The great-circle distance between two regions, in km.
pub fn distance_km(a: &FlyRegion, b: &FlyRegion) -> f64 {
    const EARTH_RADIUS_KM: f64 = 6371.0;
    let (lat1, lon1) = (
        f64::from(a.latitude).to_radians(),
        f64::from(a.longitude).to_radians(),
    );
    let (lat2, lon2) = (
        f64::from(b.latitude).to_radians(),
        f64::from(b.longitude).to_radians(),
    );
    let h = ((lat2 - lat1) / 2.0).sin().powi(2)
        + lat1.cos() * lat2.cos() * ((lon2 - lon1) / 2.0).sin().powi(2);
    2.0 * EARTH_RADIUS_KM * h.sqrt().asin()
}

#[cfg(test)]
mod tests {
    #[test]
    fn distances_are_great_circles() {
        let ams = super::fly_region("ams").unwrap();
        let fra = super::fly_region("fra").unwrap();
        let ord = super::fly_region("ord").unwrap();
        let near = super::distance_km(ams, fra);
        assert!((300.0..500.0).contains(&near), "ams-fra {near}");
        assert!(super::distance_km(ams, ord) > 6000.0);
        assert_eq!(super::distance_km(ams, ams), 0.0);
    }

    #[test]
    fn fly_codes_are_known_and_others_are_not() {
        assert_eq!(
            super::fly_region("ams").map(|r| r.geo_region),
            Some("europe")
        );
        assert!(super::fly_region("local").is_none());
        let mut codes: Vec<_> = super::FLY_REGIONS.iter().map(|r| r.code).collect();
        codes.dedup();
        assert_eq!(codes.len(), 18, "sorted and unique");
    }
}
