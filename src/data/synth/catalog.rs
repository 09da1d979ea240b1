//! The built-in categories and their defect types: names, kinds, descriptions, and which defect
//! types each category has.

use super::{CategoryInfo, SynthError};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Category {
    Weave,
    Marble,
    Grid,
    Washer,
    Bracket,
    Pcb,
}

pub(super) const CATEGORIES: [Category; 6] =
    [Category::Weave, Category::Marble, Category::Grid, Category::Washer, Category::Bracket, Category::Pcb];

impl Category {
    pub(super) fn name(self) -> &'static str {
        match self {
            Category::Weave => "weave",
            Category::Marble => "marble",
            Category::Grid => "grid",
            Category::Washer => "washer",
            Category::Bracket => "bracket",
            Category::Pcb => "pcb",
        }
    }

    pub(super) fn is_object(self) -> bool {
        matches!(self, Category::Washer | Category::Bracket | Category::Pcb)
    }

    pub(super) fn description(self) -> &'static str {
        match self {
            Category::Weave => "plain-woven fabric",
            Category::Marble => "veined stone (smooth noise texture)",
            Category::Grid => "woven metal mesh on a dark backing",
            Category::Washer => "machined steel ring on a table",
            Category::Bracket => "L-shaped zinc plate with three holes",
            Category::Pcb => "circuit board with ICs, chip parts and capacitors",
        }
    }

    pub(super) fn defects(self) -> &'static [DefectKind] {
        use DefectKind::*;
        match self {
            Category::Weave => &[Hole, Stain, ExtraPart],
            Category::Marble => &[Crack, Scratch, Stain, Hole],
            Category::Grid => &[MissingPart, ExtraPart, Misplacement],
            Category::Washer => &[Scratch, Crack, MissingPart, Stain],
            Category::Bracket => &[Hole, MissingPart, Scratch],
            Category::Pcb => &[MissingPart, ExtraPart, Misplacement, Scratch],
        }
    }

    pub(super) fn info(self) -> CategoryInfo {
        CategoryInfo {
            name: self.name(),
            kind: if self.is_object() { "object" } else { "texture" },
            description: self.description(),
            defect_types: self.defects().iter().map(|d| d.name()).collect(),
        }
    }

    pub(super) fn parse(name: &str) -> Result<Category, SynthError> {
        CATEGORIES.iter().copied().find(|c| c.name() == name).ok_or_else(|| SynthError::UnknownCategory {
            name: name.to_string(),
            available: CATEGORIES.iter().map(|c| c.name().to_string()).collect(),
        })
    }

    pub(super) fn defect(self, name: &str) -> Result<DefectKind, SynthError> {
        self.defects().iter().copied().find(|d| d.name() == name).ok_or_else(|| SynthError::UnknownDefect {
            category: self.name().to_string(),
            defect: name.to_string(),
            available: self.defects().iter().map(|d| d.name().to_string()).collect(),
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum DefectKind {
    /// A thin curved line, brighter or darker than the surface.
    Scratch,
    /// A dark blob with a raised rim.
    Hole,
    /// A branching jagged dark line.
    Crack,
    /// A soft tinted blob.
    Stain,
    /// A region or component removed, showing what is under it.
    MissingPart,
    /// A foreign particle, fibre or component.
    ExtraPart,
    /// A component shifted or rotated, or wires bent out of place.
    Misplacement,
}

impl DefectKind {
    pub(super) fn name(self) -> &'static str {
        match self {
            DefectKind::Scratch => "scratch",
            DefectKind::Hole => "hole",
            DefectKind::Crack => "crack",
            DefectKind::Stain => "stain",
            DefectKind::MissingPart => "missing_part",
            DefectKind::ExtraPart => "extra_part",
            DefectKind::Misplacement => "misplacement",
        }
    }
}
