//! Where an image stands (`importing`, `ready`, `failed`, `deleted`) and where its bytes came from
//! (`url`, `upload`, `host`): typed, so the read model, the service and the API never compare
//! strings. The read model stores them as text; an unknown value there is an error, not a default.

use serde::Serialize;

/// An image's status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ImageStatus {
    /// Its import job is running or queued.
    Importing,
    Ready,
    /// The import failed and left nothing on disk; the name may be used again.
    Failed,
    /// Deleted; never listed, and the name may be used again.
    Deleted,
}

/// Where an image's bytes came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ImageSource {
    /// Imported from a URL.
    Url,
    /// Uploaded with `PUT /images/{name}/upload`.
    Upload,
    /// Found on the host (built by a script or copied by an operator), with no event behind it.
    Host,
}

/// A value in the `images` table that none of these types has.
#[derive(Debug, thiserror::Error)]
#[error("the images table holds an unknown {column} '{value}'")]
pub struct UnknownImageValue {
    column: &'static str,
    value: String,
}

impl ImageStatus {
    pub const ALL: [ImageStatus; 4] = [
        ImageStatus::Importing,
        ImageStatus::Ready,
        ImageStatus::Failed,
        ImageStatus::Deleted,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ImageStatus::Importing => "importing",
            ImageStatus::Ready => "ready",
            ImageStatus::Failed => "failed",
            ImageStatus::Deleted => "deleted",
        }
    }
}

impl TryFrom<String> for ImageStatus {
    type Error = UnknownImageValue;

    fn try_from(value: String) -> Result<Self, Self::Error> {
        ImageStatus::ALL
            .into_iter()
            .find(|s| s.as_str() == value)
            .ok_or(UnknownImageValue {
                column: "status",
                value,
            })
    }
}

impl ImageSource {
    pub const ALL: [ImageSource; 3] = [ImageSource::Url, ImageSource::Upload, ImageSource::Host];

    pub fn as_str(self) -> &'static str {
        match self {
            ImageSource::Url => "url",
            ImageSource::Upload => "upload",
            ImageSource::Host => "host",
        }
    }
}

impl TryFrom<String> for ImageSource {
    type Error = UnknownImageValue;

    fn try_from(value: String) -> Result<Self, Self::Error> {
        ImageSource::ALL
            .into_iter()
            .find(|s| s.as_str() == value)
            .ok_or(UnknownImageValue {
                column: "source",
                value,
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_value_reads_back_as_itself_and_others_are_refused() {
        for s in ImageStatus::ALL {
            assert_eq!(ImageStatus::try_from(s.as_str().to_string()).ok(), Some(s));
        }
        for s in ImageSource::ALL {
            assert_eq!(ImageSource::try_from(s.as_str().to_string()).ok(), Some(s));
        }
        assert!(ImageStatus::try_from("Ready".to_string()).is_err());
        assert!(ImageSource::try_from("ftp".to_string()).is_err());
    }
}
