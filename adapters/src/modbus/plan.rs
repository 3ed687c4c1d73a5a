//! Block-read coalescing: the tags of one device, area and poll group are merged into as few
//! read requests as the protocol limits (125 registers / 2000 bits), the device's own limits
//! and the gap tolerance allow.
//!
//! Tags are sorted by address and swept once: a tag joins the current block when the unused
//! gap before it is at most `max_gap` and the block stays within `max_len`; otherwise it starts
//! a new block. For intervals on a line this greedy sweep yields the fewest blocks.

use std::fmt;

use serde::Serialize;

use super::config::{Area, Device};

/// Coalescing limits (normally from the device's configuration).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct PlanOptions {
    pub max_gap_registers: u16,
    pub max_gap_bits: u16,
    pub max_registers: u16,
    pub max_bits: u16,
}

impl PlanOptions {
    pub fn of(device: &Device) -> Self {
        PlanOptions {
            max_gap_registers: device.max_gap_registers,
            max_gap_bits: device.max_gap_bits,
            max_registers: device.max_registers_per_read,
            max_bits: device.max_bits_per_read,
        }
    }
    /// No merging at all: one request per tag (the baseline the savings are measured against).
    pub fn per_tag() -> Self {
        PlanOptions {
            max_gap_registers: 0,
            max_gap_bits: 0,
            max_registers: 0,
            max_bits: 0,
        }
    }
}

/// One read request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ReadBlock {
    /// Index into [`Device::groups`].
    pub group: usize,
    pub area: Area,
    pub start: u16,
    /// Registers or bits.
    pub count: u16,
    /// Indexes into [`Device::tags`], by address.
    pub tags: Vec<usize>,
}

impl ReadBlock {
    /// Units read that no tag uses (the price of merging).
    pub fn unused(&self, device: &Device) -> u32 {
        let mut covered = vec![false; usize::from(self.count)];
        for &t in &self.tags {
            let tag = &device.tags[t];
            let from = usize::from(tag.address - self.start);
            for c in covered.iter_mut().skip(from).take(usize::from(tag.width())) {
                *c = true;
            }
        }
        covered.iter().filter(|c| !**c).count() as u32
    }
}

/// The request plan of one device.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DevicePlan {
    pub device: String,
    pub blocks: Vec<ReadBlock>,
    /// Requests per poll cycle of every group without coalescing (one per tag).
    pub unmerged_requests: usize,
    #[serde(skip)]
    display: Vec<String>,
}

impl DevicePlan {
    /// Plans with the device's own limits.
    pub fn new(device: &Device) -> Self {
        Self::with_options(device, PlanOptions::of(device))
    }

    pub fn with_options(device: &Device, opts: PlanOptions) -> Self {
        let blocks = plan_blocks(device, opts);
        let display = describe(device, &blocks);
        DevicePlan {
            device: device.name.clone(),
            blocks,
            unmerged_requests: device.tags.len(),
            display,
        }
    }

    /// Requests per cycle of all groups.
    pub fn requests(&self) -> usize {
        self.blocks.len()
    }

    /// Blocks of one poll group.
    pub fn group_blocks(&self, group: usize) -> impl Iterator<Item = &ReadBlock> {
        self.blocks.iter().filter(move |b| b.group == group)
    }
}

fn plan_blocks(device: &Device, opts: PlanOptions) -> Vec<ReadBlock> {
    let mut order: Vec<usize> = (0..device.tags.len()).collect();
    order.sort_by_key(|&i| {
        let t = &device.tags[i];
        (t.group, t.area, t.address, i)
    });
    let mut blocks: Vec<ReadBlock> = Vec::new();
    for i in order {
        let t = &device.tags[i];
        let (gap, max) = if t.area.is_bits() {
            (opts.max_gap_bits, opts.max_bits)
        } else {
            (opts.max_gap_registers, opts.max_registers)
        };
        if let Some(b) = blocks.last_mut() {
            let b_end = u32::from(b.start) + u32::from(b.count);
            let t_start = u32::from(t.address);
            let new_end = b_end.max(t.end());
            if b.group == t.group
                && b.area == t.area
                && t_start <= b_end + u32::from(gap)
                && new_end - u32::from(b.start) <= u32::from(max)
            {
                b.count = (new_end - u32::from(b.start)) as u16;
                b.tags.push(i);
                continue;
            }
        }
        blocks.push(ReadBlock {
            group: t.group,
            area: t.area,
            start: t.address,
            count: t.width(),
            tags: vec![i],
        });
    }
    blocks
}

fn describe(device: &Device, blocks: &[ReadBlock]) -> Vec<String> {
    let mut lines = Vec::new();
    let mut group = usize::MAX;
    for b in blocks {
        if b.group != group {
            group = b.group;
            let g = &device.groups[group];
            lines.push(format!(
                "  group {} (every {} ms):",
                g.name,
                g.interval.as_millis()
            ));
        }
        let unit = if b.area.is_bits() {
            "bits"
        } else {
            "registers"
        };
        let names: Vec<&str> = b
            .tags
            .iter()
            .map(|&t| device.tags[t].name.as_str())
            .collect();
        let shown = if names.len() > 6 {
            format!("{}, … ({} more)", names[..5].join(", "), names.len() - 5)
        } else {
            names.join(", ")
        };
        lines.push(format!(
            "    {:<16} {:>5}..={:<5} {:>4} {unit:<9} {:>3} tag(s), {} unused: {shown}",
            b.area.as_str(),
            b.start,
            u32::from(b.start) + u32::from(b.count) - 1,
            b.count,
            b.tags.len(),
            b.unused(device),
        ));
    }
    lines
}

impl fmt::Display for DevicePlan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "device {}: {} tag(s) in {} request(s) per cycle ({} without coalescing)",
            self.device,
            self.unmerged_requests,
            self.blocks.len(),
            self.unmerged_requests
        )?;
        for l in &self.display {
            writeln!(f, "{l}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::modbus::config::ModbusConfig;

    fn device(toml_text: &str) -> Device {
        let c: ModbusConfig = toml::from_str(toml_text).expect("parses");
        c.validate().expect("valid").remove(0)
    }

    const HEAD: &str = "[[devices]]\nname='d'\ntransport={type='tcp', address='127.0.0.1'}\n";

    #[test]
    fn merges_within_gap_and_splits_beyond() {
        let d = device(&format!(
            "{HEAD}max_gap_registers = 3\n\
             [[devices.tags]]\nname='a'\naddress='40001'\ntype='u16'\n\
             [[devices.tags]]\nname='b'\naddress='40005'\ntype='u32'\n\
             [[devices.tags]]\nname='c'\naddress='40011'\ntype='u16'\n\
             [[devices.tags]]\nname='e'\naddress='30001'\ntype='u16'\n"
        ));
        let p = DevicePlan::new(&d);
        // a at 0, b at 4..6 (gap 3: merged), c at 10 (gap 4: split), e in another area.
        let got: Vec<(Area, u16, u16, usize)> = p
            .blocks
            .iter()
            .map(|b| (b.area, b.start, b.count, b.tags.len()))
            .collect();
        assert_eq!(
            got,
            vec![
                (Area::HoldingRegister, 0, 6, 2),
                (Area::HoldingRegister, 10, 1, 1),
                (Area::InputRegister, 0, 1, 1),
            ]
        );
        assert_eq!(p.blocks[0].unused(&d), 3);
        let text = p.to_string();
        assert!(text.contains("4 tag(s) in 3 request(s)"), "{text}");
    }

    #[test]
    fn respects_request_size_limits() {
        let mut tags = String::new();
        for i in 0..130 {
            tags.push_str(&format!(
                "[[devices.tags]]\nname='r{i}'\narea='holding_register'\naddress={i}\ntype='u16'\n"
            ));
        }
        for i in 0..2100 {
            if i % 100 == 0 {
                tags.push_str(&format!(
                    "[[devices.tags]]\nname='c{i}'\narea='coil'\naddress={i}\ntype='bool'\n"
                ));
            }
        }
        tags.push_str("[[devices.tags]]\nname='c2099'\narea='coil'\naddress=2099\ntype='bool'\n");
        let d = device(&format!("{HEAD}max_gap_bits = 100\n{tags}"));
        let p = DevicePlan::new(&d);
        for b in &p.blocks {
            let max = if b.area.is_bits() { 2000 } else { 125 };
            assert!(b.count <= max, "{b:?}");
        }
        let regs: Vec<u16> = p
            .blocks
            .iter()
            .filter(|b| !b.area.is_bits())
            .map(|b| b.count)
            .collect();
        assert_eq!(regs, vec![125, 5]);
        let bits: Vec<(u16, u16)> = p
            .blocks
            .iter()
            .filter(|b| b.area.is_bits())
            .map(|b| (b.start, b.count))
            .collect();
        assert_eq!(bits, vec![(0, 1901), (2000, 100)]);
        // A device limit below the protocol's.
        let d = device(&format!("{HEAD}max_registers_per_read = 10\n{tags}"));
        assert!(
            DevicePlan::new(&d)
                .blocks
                .iter()
                .filter(|b| !b.area.is_bits())
                .all(|b| b.count <= 10)
        );
    }

    #[test]
    fn groups_are_never_merged_and_bits_share_registers() {
        let d = device(&format!(
            "{HEAD}groups=[{{name='fast', interval_ms=100}}]\n\
             [[devices.tags]]\nname='a'\naddress='40001'\ntype='u16'\n\
             [[devices.tags]]\nname='b'\naddress='40002'\ntype='u16'\ngroup='fast'\n\
             [[devices.tags]]\nname='c'\naddress='40003'\ntype='bit'\nbit=0\n\
             [[devices.tags]]\nname='e'\naddress='40003'\ntype='bit'\nbit=5\n"
        ));
        let p = DevicePlan::new(&d);
        assert_eq!(p.blocks.len(), 2);
        assert_eq!(p.blocks[0].tags.len(), 3);
        assert_eq!((p.blocks[0].start, p.blocks[0].count), (0, 3));
        assert_eq!(p.blocks[1].group, 1);
        assert_eq!(p.group_blocks(1).count(), 1);
    }

    /// A realistic 200-tag map across three areas: a PLC with process values in holding
    /// registers (mixed widths, a few holes), measurements in input registers and status bits
    /// in coils, in two poll groups.
    pub(crate) fn realistic_200_tag_map() -> String {
        let mut s = String::from(
            "[[devices]]\nname='line3-plc'\ntransport={type='tcp', address='127.0.0.1:5020'}\n\
             groups=[{name='fast', interval_ms=250}]\n",
        );
        let mut n = 0;
        let mut tag = |s: &mut String, area: &str, addr: u32, ty: &str, group: Option<&str>| {
            n += 1;
            s.push_str(&format!(
                "[[devices.tags]]\nname='t{n}'\narea='{area}'\naddress={addr}\ntype='{ty}'\n{}",
                group.map(|g| format!("group='{g}'\n")).unwrap_or_default()
            ));
        };
        // 80 holding registers: setpoints/parameters as f32 in blocks of 10 with a 6-register
        // hole between blocks, plus 20 u16 words far away.
        let mut addr = 0;
        for i in 0..60 {
            tag(
                &mut s,
                "holding_register",
                addr,
                "f32",
                (i < 12).then_some("fast"),
            );
            addr += 2;
            if i % 10 == 9 {
                addr += 6;
            }
        }
        for i in 0..20 {
            tag(&mut s, "holding_register", 1000 + i * 3, "u16", None);
        }
        // 70 input registers: analog inputs (i16, scaled), grouped by card of 16 channels with
        // 8 unused channels after each card; counters as u32 far away.
        for i in 0..50u32 {
            let card = i / 16;
            tag(
                &mut s,
                "input_register",
                card * 24 + i % 16,
                "i16",
                (i < 16).then_some("fast"),
            );
        }
        for i in 0..20 {
            tag(&mut s, "input_register", 5000 + i * 2, "u32", None);
        }
        // 50 coils: status bits in two clusters.
        for i in 0..30 {
            tag(&mut s, "coil", i * 2, "bool", (i < 10).then_some("fast"));
        }
        for i in 0..20 {
            tag(&mut s, "coil", 3000 + i, "bool", None);
        }
        s
    }

    #[test]
    fn requests_saved_on_a_realistic_200_tag_map() {
        let d = device(&realistic_200_tag_map());
        assert_eq!(d.tags.len(), 200);
        let per_tag = DevicePlan::with_options(&d, PlanOptions::per_tag());
        let no_gap = DevicePlan::with_options(
            &d,
            PlanOptions {
                max_gap_registers: 0,
                max_gap_bits: 0,
                ..PlanOptions::of(&d)
            },
        );
        let default = DevicePlan::new(&d);
        let wide = DevicePlan::with_options(
            &d,
            PlanOptions {
                max_gap_registers: 20,
                max_gap_bits: 256,
                ..PlanOptions::of(&d)
            },
        );
        let words = |p: &DevicePlan| -> u32 { p.blocks.iter().map(|b| u32::from(b.count)).sum() };
        println!("coalescing on a 200-tag map (80 holding, 70 input, 50 coils; 2 groups):");
        for (label, p) in [
            ("one request per tag", &per_tag),
            ("contiguous only (gap 0)", &no_gap),
            ("default (gap 10 regs / 64 bits)", &default),
            ("gap 20 regs / 256 bits", &wide),
        ] {
            println!(
                "  {label:<34} {:>3} requests per cycle, {:>5} registers+bits read",
                p.requests(),
                words(p)
            );
        }
        println!("{default}");
        assert_eq!(per_tag.requests(), 200);
        assert!(default.requests() <= 12, "{default}");
        assert!(no_gap.requests() > default.requests());
        assert!(wide.requests() <= default.requests());
    }
}
