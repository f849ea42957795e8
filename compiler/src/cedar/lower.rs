//! Lowering: from a validated Cedar policy's syntax tree to a [`LoweredRule`], or to the
//! diagnostics that say which construct cannot become a kernel look-up, and why.
//!
//! The walk runs over `cedar-policy-core`'s AST rather than the public crate's JSON or
//! PST forms because only the AST keeps each sub-expression's source location, which a
//! refusal must point at. The AST has already desugared some syntax: `a != b` is
//! `!(a == b)`, `a > b` is `!(a <= b)`, `a >= b` is `!(a < b)`, and `unless { c }` is
//! `!c`; the lowering follows the same equivalences, so they are exact.
//!
//! The lowering runs only on policies that passed strict validation, so attribute names
//! and types are known to be the schema's; it still checks every shape it relies on and
//! refuses anything else rather than guess.
use std::{collections::BTreeSet, net::IpAddr, path::Path, sync::Arc};

use cedar_policy_core::{
    ast::{
        self, ActionConstraint, BinaryOp, EntityReference, ExprKind, Literal, PatternElem,
        PrincipalOrResourceConstraint, UnaryOp, Var,
    },
    parser::Loc,
};
use miette::SourceSpan;

use super::{
    diag::CedarDiagnostic,
    ir::{
        Action, Atom, Cidr, CmpOp, Condition, Effect, IdAttr, LoweredRule, PathAttr,
        PrincipalScope, ResourceScope, Subject,
    },
};

/// Where the policy being lowered lives, for diagnostics.
pub(crate) struct PolicySource<'a> {
    pub file: &'a Path,
    pub text: &'a Arc<str>,
    /// The policy's own span in `text`.
    pub span: Option<SourceSpan>,
}

/// Lowers one static policy (a template without slots) that strict validation accepted.
pub(crate) fn lower_policy(
    id: String,
    template: &ast::Template,
    src: &PolicySource<'_>,
) -> Result<LoweredRule, Vec<CedarDiagnostic>> {
    let mut lowerer = Lowerer {
        src,
        errors: Vec::new(),
    };
    let line = src
        .span
        .map(|s| CedarDiagnostic::at(src.file, src.text, Some(s), "", None).line)
        .unwrap_or(0);
    let effect = match template.effect() {
        ast::Effect::Permit => Effect::Permit,
        ast::Effect::Forbid => Effect::Forbid,
    };
    let principal = lowerer.principal_scope(template.principal_constraint().as_inner());
    let actions = lowerer.actions(template.action_constraint());
    let (resource, resource_condition) =
        lowerer.resource_scope(template.resource_constraint().as_inner());
    let condition = match template.non_scope_constraints() {
        Some(expr) => lowerer.condition(expr),
        None => Some(Condition::True),
    };
    match (principal, actions, resource, condition) {
        (Some(principal), Some(actions), Some(resource), Some(condition))
            if lowerer.errors.is_empty() =>
        {
            Ok(LoweredRule {
                id,
                source: src.file.to_path_buf(),
                line,
                effect,
                principal,
                actions,
                resource,
                condition: Condition::and(resource_condition, condition),
            })
        }
        _ => Err(lowerer.errors),
    }
}

struct Lowerer<'s, 'a> {
    src: &'s PolicySource<'a>,
    errors: Vec<CedarDiagnostic>,
}

/// What an attribute of `principal` or `resource` is, as far as look-ups go.
#[derive(Clone, Copy)]
enum AttrKind {
    Path(PathAttr),
    Id(IdAttr),
    Port,
    Protocol,
    Ip,
}

impl<'s, 'a> Lowerer<'s, 'a> {
    /// Records a refusal at `loc` (or at the policy when the AST has no location).
    fn refuse(&mut self, loc: Option<&Loc>, reason: impl Into<String>, help: &str) {
        let span = loc.map(|l| l.span).or(self.src.span);
        self.errors.push(CedarDiagnostic::at(
            self.src.file,
            self.src.text,
            span,
            reason,
            (!help.is_empty()).then(|| help.to_string()),
        ));
    }

    /// Refusal of a scope constraint; the AST keeps no location for scopes, so this
    /// points at the policy head `permit (…)` / `forbid (…)`.
    fn refuse_scope(&mut self, reason: impl Into<String>, help: &str) {
        let span = self.scope_span();
        self.errors.push(CedarDiagnostic::at(
            self.src.file,
            self.src.text,
            span,
            reason,
            (!help.is_empty()).then(|| help.to_string()),
        ));
    }

    /// The span of `permit (…)` / `forbid (…)` in the policy, past its annotations.
    fn scope_span(&self) -> Option<SourceSpan> {
        let policy = self.src.span?;
        let start = policy.offset();
        let text = self.src.text.get(start..start + policy.len())?;
        let head = [text.find("permit"), text.find("forbid")]
            .into_iter()
            .flatten()
            .filter(|&i| {
                // Skip a keyword quoted in an annotation: it is preceded by `("`-ish text
                // on the same line, while the effect keyword starts its own token.
                text[..i]
                    .chars()
                    .next_back()
                    .is_none_or(|c| c.is_whitespace() || c == ')')
            })
            .min()?;
        let close = text[head..].find(')').map_or(text.len(), |i| head + i + 1);
        Some(SourceSpan::from((start + head, close - head)))
    }

    fn principal_scope(&mut self, c: &PrincipalOrResourceConstraint) -> Option<PrincipalScope> {
        match c {
            PrincipalOrResourceConstraint::Any => Some(PrincipalScope::Any),
            PrincipalOrResourceConstraint::In(EntityReference::EUID(uid))
                if uid.entity_type().to_string() == "Workload" =>
            {
                Some(PrincipalScope::Workload(uid.eid().as_ref().to_string()))
            }
            PrincipalOrResourceConstraint::In(EntityReference::EUID(uid)) => {
                self.refuse_scope(
                    format!("`principal in {uid}` is not supported: a process is grouped only by its workload"),
                    "write `principal in Workload::\"<name>\"`",
                );
                None
            }
            PrincipalOrResourceConstraint::Eq(EntityReference::EUID(uid)) => {
                self.refuse_scope(
                    format!("`principal == {uid}` is not supported: the kernel knows a process by its attributes and workload, not by an entity id"),
                    "write `principal in Workload::\"<name>\"`, or test `principal.uid`, `principal.exe`, … in a `when` clause",
                );
                None
            }
            PrincipalOrResourceConstraint::In(EntityReference::Slot(_))
            | PrincipalOrResourceConstraint::Eq(EntityReference::Slot(_))
            | PrincipalOrResourceConstraint::IsIn(_, EntityReference::Slot(_)) => {
                self.refuse_scope(
                    "templates (`?principal`) are not supported: every rule must be a static policy",
                    "",
                );
                None
            }
            PrincipalOrResourceConstraint::Is(_) | PrincipalOrResourceConstraint::IsIn(_, _) => {
                self.refuse_scope(
                    "`is` is not supported: the principal is always a Process",
                    "drop `is Process`; use `principal in Workload::\"<name>\"` to narrow the scope",
                );
                None
            }
        }
    }

    fn actions(&mut self, c: &ActionConstraint) -> Option<BTreeSet<Action>> {
        let uids: Vec<&ast::EntityUID> = match c {
            ActionConstraint::Any => return Some(Action::ALL.into_iter().collect()),
            ActionConstraint::Eq(uid) => vec![uid.as_ref()],
            ActionConstraint::In(uids) => uids.iter().map(|u| u.as_ref()).collect(),
            #[allow(
                unreachable_patterns,
                reason = "present with cedar's tolerant-ast feature"
            )]
            _ => {
                self.refuse_scope("this action constraint is not supported", "");
                return None;
            }
        };
        let mut out = BTreeSet::new();
        for uid in uids {
            match Action::from_cedar_name(uid.eid().as_ref()) {
                Some(a) if uid.entity_type().to_string() == "Action" => {
                    out.insert(a);
                }
                _ => {
                    self.refuse_scope(format!("unknown action {uid}"), "");
                    return None;
                }
            }
        }
        if out.is_empty() {
            // `action in []` matches no request.
            self.refuse_scope(
                "`action in []` names no action, so the rule can never apply",
                "list at least one action",
            );
            return None;
        }
        Some(out)
    }

    /// The resource scope, and the condition that a `resource in Workload::"…"` scope
    /// contributes.
    fn resource_scope(
        &mut self,
        c: &PrincipalOrResourceConstraint,
    ) -> (Option<ResourceScope>, Condition) {
        match c {
            PrincipalOrResourceConstraint::Any => (Some(ResourceScope::Any), Condition::True),
            PrincipalOrResourceConstraint::Eq(EntityReference::EUID(uid)) => {
                let ty = uid.entity_type().to_string();
                let eid = uid.eid().as_ref().to_string();
                let scope = match ty.as_str() {
                    "Executable" => Some(ResourceScope::Executable(eid)),
                    "File" => Some(ResourceScope::File(eid)),
                    "User" => match eid.parse::<u32>() {
                        Ok(n) if n.to_string() == eid => Some(ResourceScope::User(n)),
                        _ => {
                            self.refuse_scope(
                                format!("`{uid}` is not a user id: a User's entity id is its uid in decimal, without leading zeros"),
                                "write e.g. `resource == User::\"0\"`",
                            );
                            None
                        }
                    },
                    _ => {
                        self.refuse_scope(
                            format!("`resource == {uid}` is not supported: only Executable, File and User resources are known by id"),
                            "test the resource's attributes in a `when` clause instead (e.g. `resource.ip.isInRange(ip(\"10.0.0.0/8\"))`)",
                        );
                        None
                    }
                };
                (scope, Condition::True)
            }
            PrincipalOrResourceConstraint::In(EntityReference::EUID(uid))
                if uid.entity_type().to_string() == "Workload" =>
            {
                (
                    Some(ResourceScope::Any),
                    Condition::Atom(Atom::InWorkload {
                        subject: Subject::Target,
                        workload: uid.eid().as_ref().to_string(),
                    }),
                )
            }
            PrincipalOrResourceConstraint::In(EntityReference::EUID(uid)) => {
                self.refuse_scope(
                    format!("`resource in {uid}` is not supported: only a process (the target of ptrace) belongs to anything, its workload"),
                    "write `resource == <entity>` or test attributes in a `when` clause",
                );
                (None, Condition::True)
            }
            PrincipalOrResourceConstraint::In(EntityReference::Slot(_))
            | PrincipalOrResourceConstraint::Eq(EntityReference::Slot(_))
            | PrincipalOrResourceConstraint::IsIn(_, EntityReference::Slot(_)) => {
                self.refuse_scope(
                    "templates (`?resource`) are not supported: every rule must be a static policy",
                    "",
                );
                (None, Condition::True)
            }
            PrincipalOrResourceConstraint::Is(_) | PrincipalOrResourceConstraint::IsIn(_, _) => {
                self.refuse_scope(
                    "`is` is not supported: the action already fixes the resource's type",
                    "constrain the action instead (e.g. `action == Action::\"exec\"`)",
                );
                (None, Condition::True)
            }
        }
    }

    /// Lowers a boolean expression; `None` after recording why it cannot be lowered.
    fn condition(&mut self, e: &ast::Expr) -> Option<Condition> {
        let loc = e.source_loc();
        match e.expr_kind() {
            ExprKind::Lit(Literal::Bool(true)) => Some(Condition::True),
            ExprKind::Lit(Literal::Bool(false)) => Some(Condition::False),
            ExprKind::And { left, right } => {
                // Lower both sides so that every refusal is reported at once.
                let l = self.condition(left);
                let r = self.condition(right);
                Some(Condition::And(Box::new(l?), Box::new(r?)))
            }
            ExprKind::Or { left, right } => {
                let l = self.condition(left);
                let r = self.condition(right);
                Some(Condition::Or(Box::new(l?), Box::new(r?)))
            }
            ExprKind::UnaryApp {
                op: UnaryOp::Not,
                arg,
            } => Some(Condition::Not(Box::new(self.condition(arg)?))),
            ExprKind::BinaryApp {
                op: BinaryOp::Eq,
                arg1,
                arg2,
            } => self.equality(loc, arg1, arg2),
            ExprKind::BinaryApp {
                op: op @ (BinaryOp::Less | BinaryOp::LessEq),
                arg1,
                arg2,
            } => self.port_order(loc, *op, arg1, arg2),
            ExprKind::BinaryApp {
                op: BinaryOp::In,
                arg1,
                arg2,
            } => self.membership(loc, arg1, arg2),
            ExprKind::Like { expr, pattern } => self.like(loc, expr, pattern),
            ExprKind::ExtensionFunctionApp { fn_name, args } => {
                self.extension_call(loc, &fn_name.to_string(), args)
            }
            other => {
                let (reason, help) = unsupported(other);
                self.refuse(loc, reason, help);
                None
            }
        }
    }

    /// `attr == constant` (either way round).
    fn equality(&mut self, loc: Option<&Loc>, a: &ast::Expr, b: &ast::Expr) -> Option<Condition> {
        let (attr, lit) = match (self.attribute(a), self.attribute(b)) {
            (Some(attr), None) => (attr, b),
            (None, Some(attr)) => (attr, a),
            (Some(_), Some(_)) => {
                self.refuse(
                    loc,
                    "comparing two attributes is not supported: the kernel compares an attribute with a constant from the policy",
                    "compare each attribute with a constant",
                );
                return None;
            }
            (None, None) => {
                // Point at the side that is neither a literal nor a known attribute,
                // with the reason that construct is refused.
                let odd = [a, b]
                    .into_iter()
                    .find(|e| !matches!(e.expr_kind(), ExprKind::Lit(_)));
                match odd {
                    Some(e) => self.refuse_operand(e, loc),
                    None => self.refuse(loc, "this `==` compares two constants", ATTRIBUTE_HELP),
                }
                return None;
            }
        };
        let atom = match (attr, lit.expr_kind()) {
            (AttrKind::Path(attr), ExprKind::Lit(Literal::String(s))) => Atom::PathEq {
                attr,
                value: s.to_string(),
            },
            (AttrKind::Id(attr), ExprKind::Lit(Literal::Long(v))) => {
                Atom::UidEq { attr, value: *v }
            }
            (AttrKind::Port, ExprKind::Lit(Literal::Long(v))) => Atom::PortCmp {
                op: CmpOp::Eq,
                value: *v,
            },
            (AttrKind::Protocol, ExprKind::Lit(Literal::String(s))) => {
                Atom::ProtocolEq(s.to_string())
            }
            (AttrKind::Ip, _) => {
                self.refuse(
                    loc,
                    "`==` on an ipaddr is not supported: Cedar compares the prefix length too, which a kernel address look-up cannot",
                    "write `resource.ip.isInRange(ip(\"10.0.0.1/32\"))`",
                );
                return None;
            }
            _ => {
                self.refuse(
                    loc,
                    "the other side of this `==` is not a constant of the attribute's type",
                    "compare with a string or integer literal",
                );
                return None;
            }
        };
        Some(Condition::Atom(atom))
    }

    /// `resource.port < n`, `resource.port <= n`, or the literal on the left.
    fn port_order(
        &mut self,
        loc: Option<&Loc>,
        op: BinaryOp,
        a: &ast::Expr,
        b: &ast::Expr,
    ) -> Option<Condition> {
        let port_left = matches!(self.attribute(a), Some(AttrKind::Port));
        let port_right = matches!(self.attribute(b), Some(AttrKind::Port));
        let cmp = match (port_left, port_right, a.expr_kind(), b.expr_kind()) {
            (true, false, _, ExprKind::Lit(Literal::Long(v))) => {
                let op = if op == BinaryOp::Less {
                    CmpOp::Lt
                } else {
                    CmpOp::Le
                };
                (op, *v)
            }
            (false, true, ExprKind::Lit(Literal::Long(v)), _) => {
                // `n < port` is `port > n`.
                let op = if op == BinaryOp::Less {
                    CmpOp::Gt
                } else {
                    CmpOp::Ge
                };
                (op, *v)
            }
            _ => {
                self.refuse(
                    loc,
                    "ordering comparisons are supported only between `resource.port` and an integer literal: the kernel keeps port ranges, not other orders",
                    "write e.g. `resource.port < 1024`",
                );
                return None;
            }
        };
        Some(Condition::Atom(Atom::PortCmp {
            op: cmp.0,
            value: cmp.1,
        }))
    }

    /// `principal in Workload::"w"` or `resource in Workload::"w"`.
    fn membership(&mut self, loc: Option<&Loc>, a: &ast::Expr, b: &ast::Expr) -> Option<Condition> {
        let subject = match a.expr_kind() {
            ExprKind::Var(Var::Principal) => Some(Subject::Principal),
            ExprKind::Var(Var::Resource) => Some(Subject::Target),
            _ => None,
        };
        match (subject, b.expr_kind()) {
            (Some(subject), ExprKind::Lit(Literal::EntityUID(uid)))
                if uid.entity_type().to_string() == "Workload" =>
            {
                Some(Condition::Atom(Atom::InWorkload {
                    subject,
                    workload: uid.eid().as_ref().to_string(),
                }))
            }
            _ => {
                self.refuse(
                    loc,
                    "`in` is supported only as `principal in Workload::\"<name>\"` (or `resource in …` for ptrace): a process belongs to one workload and nothing else does",
                    "",
                );
                None
            }
        }
    }

    fn like(
        &mut self,
        loc: Option<&Loc>,
        expr: &ast::Expr,
        pattern: &ast::Pattern,
    ) -> Option<Condition> {
        let Some(AttrKind::Path(attr)) = self.attribute(expr) else {
            self.refuse(
                loc,
                "`like` is supported only on path attributes (`principal.exe`, `principal.parent_exe`, `resource.path`, …)",
                "",
            );
            return None;
        };
        let elems = pattern.get_elems();
        let wildcards = elems
            .iter()
            .filter(|e| matches!(e, PatternElem::Wildcard))
            .count();
        let starts_wild = matches!(elems.first(), Some(PatternElem::Wildcard));
        let ends_wild = matches!(elems.last(), Some(PatternElem::Wildcard));
        let literal: String = elems
            .iter()
            .filter_map(|e| match e {
                PatternElem::Char(c) => Some(*c),
                PatternElem::Wildcard => None,
            })
            .collect();
        let inner_chars_between_wildcards = {
            // Literal characters strictly between the first and last wildcard.
            let first = elems
                .iter()
                .position(|e| matches!(e, PatternElem::Wildcard));
            let last = elems
                .iter()
                .rposition(|e| matches!(e, PatternElem::Wildcard));
            match (first, last) {
                (Some(f), Some(l)) => elems[f..l]
                    .iter()
                    .any(|e| matches!(e, PatternElem::Char(_))),
                _ => false,
            }
        };
        let atom = if wildcards == 0 {
            Atom::PathEq {
                attr,
                value: literal,
            }
        } else if inner_chars_between_wildcards || (starts_wild && ends_wild && !literal.is_empty())
        {
            self.refuse(
                loc,
                "this pattern has a wildcard inside it; only a prefix (`\"/tmp/*\"`) or a suffix (`\"*.sh\"`) maps onto a kernel path look-up",
                "split it into a prefix and a suffix joined with `&&`, if that is what you mean",
            );
            return None;
        } else if ends_wild && !starts_wild {
            Atom::PathPrefix {
                attr,
                prefix: literal,
            }
        } else if starts_wild && !ends_wild {
            Atom::PathSuffix {
                attr,
                suffix: literal,
            }
        } else {
            // Only wildcards: matches every path.
            Atom::PathPrefix {
                attr,
                prefix: String::new(),
            }
        };
        Some(Condition::Atom(atom))
    }

    fn extension_call(
        &mut self,
        loc: Option<&Loc>,
        name: &str,
        args: &[ast::Expr],
    ) -> Option<Condition> {
        if name != "isInRange" {
            self.refuse(
                loc,
                format!("extension function `{name}` is not supported: only `isInRange` on `resource.ip` maps onto a kernel look-up"),
                "",
            );
            return None;
        }
        let [subject, range] = args else {
            self.refuse(loc, "`isInRange` takes one range", "");
            return None;
        };
        if !matches!(self.attribute(subject), Some(AttrKind::Ip)) {
            self.refuse(
                loc,
                "`isInRange` is supported only on `resource.ip`",
                "write `resource.ip.isInRange(ip(\"10.0.0.0/8\"))`",
            );
            return None;
        }
        let literal = match range.expr_kind() {
            ExprKind::ExtensionFunctionApp { fn_name, args } if fn_name.to_string() == "ip" => {
                match args.as_slice() {
                    [arg] => match arg.expr_kind() {
                        ExprKind::Lit(Literal::String(s)) => Some(s.to_string()),
                        _ => None,
                    },
                    _ => None,
                }
            }
            _ => None,
        };
        let Some(literal) = literal else {
            self.refuse(
                range.source_loc().or(loc),
                "the range must be a literal `ip(\"<address>/<prefix>\")`",
                "",
            );
            return None;
        };
        match parse_cedar_ip(&literal) {
            Ok(cidr) => Some(Condition::Atom(Atom::IpInRange(cidr))),
            Err(why) => {
                self.refuse(
                    range.source_loc().or(loc),
                    format!("invalid address range `{literal}`: {why}"),
                    "",
                );
                None
            }
        }
    }

    /// Refuses an operand that is neither a constant nor a supported attribute, at the
    /// innermost construct responsible (`{ a: 1 }` in `{ a: 1 }.a`).
    fn refuse_operand(&mut self, e: &ast::Expr, outer: Option<&Loc>) {
        let at = e.source_loc().or(outer);
        match e.expr_kind() {
            ExprKind::GetAttr { expr, attr } => match expr.expr_kind() {
                ExprKind::Var(v) => self.refuse(
                    at,
                    format!("`{v}.{attr}` is not an attribute the kernel knows"),
                    ATTRIBUTE_HELP,
                ),
                _ => self.refuse_operand(expr, at),
            },
            ExprKind::Var(v) => self.refuse(
                at,
                format!("comparing `{v}` itself is not supported: the kernel knows entities by their attributes"),
                ATTRIBUTE_HELP,
            ),
            kind => {
                let (reason, help) = unsupported(kind);
                self.refuse(at, reason, help);
            }
        }
    }

    /// The kind of `principal.<attr>` / `resource.<attr>`, if `e` is such an access to
    /// an attribute the lowering knows.
    fn attribute(&self, e: &ast::Expr) -> Option<AttrKind> {
        let ExprKind::GetAttr { expr, attr } = e.expr_kind() else {
            return None;
        };
        let var = match expr.expr_kind() {
            ExprKind::Var(v) => *v,
            _ => return None,
        };
        Some(match (var, attr.as_str()) {
            (Var::Principal, "uid") => AttrKind::Id(IdAttr::PrincipalUid),
            (Var::Principal, "euid") => AttrKind::Id(IdAttr::PrincipalEuid),
            (Var::Principal, "gid") => AttrKind::Id(IdAttr::PrincipalGid),
            (Var::Principal, "exe") => AttrKind::Path(PathAttr::PrincipalExe),
            (Var::Principal, "parent_exe") => AttrKind::Path(PathAttr::PrincipalParentExe),
            (Var::Resource, "path") => AttrKind::Path(PathAttr::ResourcePath),
            (Var::Resource, "exe") => AttrKind::Path(PathAttr::TargetExe),
            (Var::Resource, "parent_exe") => AttrKind::Path(PathAttr::TargetParentExe),
            (Var::Resource, "uid") => AttrKind::Id(IdAttr::ResourceUid),
            (Var::Resource, "euid") => AttrKind::Id(IdAttr::TargetEuid),
            (Var::Resource, "gid") => AttrKind::Id(IdAttr::TargetGid),
            (Var::Resource, "port") => AttrKind::Port,
            (Var::Resource, "protocol") => AttrKind::Protocol,
            (Var::Resource, "ip") => AttrKind::Ip,
            _ => return None,
        })
    }
}

const ATTRIBUTE_HELP: &str = "supported: principal.{uid,euid,gid,exe,parent_exe}, resource.{path,port,protocol,ip,uid,euid,gid,exe,parent_exe} compared with a literal";

/// Why an expression form is refused, and what to write instead.
fn unsupported<T>(kind: &ExprKind<T>) -> (String, &'static str) {
    let (what, help): (&str, &str) = match kind {
        ExprKind::Lit(_) => (
            "a literal that is not `true` or `false` is not a condition",
            "",
        ),
        ExprKind::Var(_) => ("a bare variable is not a condition", ""),
        ExprKind::Slot(_) => (
            "templates (`?principal`, `?resource`) are not supported: every rule must be a static policy",
            "",
        ),
        ExprKind::Unknown(_) => ("partial-evaluation unknowns are not supported", ""),
        ExprKind::If { .. } => (
            "`if … then … else` is not supported: it has no kernel look-up",
            "rewrite it with `&&` and `||`",
        ),
        ExprKind::UnaryApp {
            op: UnaryOp::Neg, ..
        } => (
            "arithmetic (negation) is not supported: the kernel compares with constants only",
            "write the negative number as a literal",
        ),
        ExprKind::UnaryApp {
            op: UnaryOp::IsEmpty,
            ..
        } => (
            "`isEmpty` is not supported: sets have no kernel look-up",
            "",
        ),
        ExprKind::UnaryApp { .. } => (
            "a condition is compared here with `==`; only an attribute compared with a constant is supported",
            "use the condition directly",
        ),
        ExprKind::BinaryApp { op, .. } => match op {
            BinaryOp::Add | BinaryOp::Sub | BinaryOp::Mul => (
                "arithmetic is not supported: the kernel compares attributes with constants only",
                "compute the constant yourself and write it as a literal",
            ),
            BinaryOp::Contains | BinaryOp::ContainsAll | BinaryOp::ContainsAny => (
                "`contains`/`containsAll`/`containsAny` are not supported: sets have no kernel look-up",
                "write one `==` per value joined with `||`",
            ),
            BinaryOp::GetTag | BinaryOp::HasTag => (
                "entity tags are not supported: the schema declares none",
                "",
            ),
            _ => ("this operator is not supported", ATTRIBUTE_HELP),
        },
        ExprKind::ExtensionFunctionApp { .. } => ("this extension function is not supported", ""),
        ExprKind::GetAttr { .. } => (
            "this attribute access is not a condition on its own",
            ATTRIBUTE_HELP,
        ),
        ExprKind::HasAttr { .. } | ExprKind::ExtHasAttr { .. } => (
            "`has` is not supported: every attribute in the schema is always present",
            "drop the `has` test",
        ),
        ExprKind::Like { .. } => ("`like` is supported only on path attributes", ""),
        ExprKind::Is { .. } => (
            "`is` is not supported: the action already fixes each entity's type",
            "constrain the action instead",
        ),
        ExprKind::Set(_) => ("sets are not supported: they have no kernel look-up", ""),
        ExprKind::Record(_) => ("records are not supported: they have no kernel look-up", ""),
        #[allow(
            unreachable_patterns,
            reason = "present with cedar's tolerant-ast feature"
        )]
        _ => ("this expression is not supported", ""),
    };
    (what.to_string(), help)
}

/// Parses the argument of `ip("…")` exactly as Cedar's `ipaddr` extension does (an
/// address, optionally `/prefix` in decimal without leading zeros; no IPv4 embedded in
/// IPv6), so that a literal means the same range here as in Cedar.
pub fn parse_cedar_ip(s: &str) -> Result<Cidr, String> {
    // Cedar's own limit on the length of an `ip("…")` argument.
    if s.len() > 43 {
        return Err("longer than 43 characters".into());
    }
    if s.contains(':') && s.contains('.') {
        return Err("IPv4 embedded in IPv6 is not accepted".into());
    }
    let (addr, prefix) = match s.split_once('/') {
        Some((a, p)) => (a, Some(p)),
        None => (s, None),
    };
    let addr: IpAddr = addr
        .parse()
        .map_err(|e| format!("`{addr}` is not an IP address: {e}"))?;
    let max: u8 = if addr.is_ipv4() { 32 } else { 128 };
    let prefix = match prefix {
        None => max,
        Some(p) => {
            if p.is_empty() || p.len() > 3 || !p.bytes().all(|b| b.is_ascii_digit()) {
                return Err(format!("prefix `{p}` is not a decimal number"));
            }
            if p.starts_with('0') && p != "0" {
                return Err(format!("prefix `{p}` has leading zeros"));
            }
            let n: u8 = p
                .parse()
                .map_err(|_| format!("prefix `{p}` is out of range"))?;
            if n > max {
                return Err(format!("prefix {n} is longer than {max}"));
            }
            n
        }
    };
    Cidr::new(addr, prefix).ok_or_else(|| format!("prefix {prefix} is too long"))
}
