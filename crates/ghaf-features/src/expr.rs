//! SQL expressions of feature views: parsed with `sqlparser`, type-checked against the
//! source dataset's Arrow schema once, then evaluated over record batches with Arrow's
//! compute kernels.
//!
//! The supported subset: column names, number, string, boolean and NULL literals, `+ - * / %`,
//! comparisons, `AND`/`OR`/`NOT` (three-valued), `IS [NOT] NULL`, `[NOT] BETWEEN`,
//! `CASE WHEN`, `CAST(x AS BIGINT|DOUBLE|VARCHAR|BOOLEAN)`, `EXTRACT(YEAR|MONTH|DAY|HOUR|
//! MINUTE|DOW FROM ts)` and the functions `coalesce`, `abs`, `lower`, `upper`. Integer
//! arithmetic stays integer except `/`, which returns a float; division by zero and integer
//! overflow give NULL.

use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, Float64Array, Int64Array, StringArray, new_null_array,
};
use arrow::compute::kernels::cmp;
use arrow::compute::kernels::numeric;
use arrow::compute::kernels::temporal::{DatePart, date_part};
use arrow::compute::{and_kleene, cast, is_not_null, is_null, not, nullif, or_kleene};
use arrow::datatypes::{DataType, Schema};
use arrow::record_batch::RecordBatch;
use sqlparser::ast::{
    self as sql, BinaryOperator, DateTimeField, FunctionArg, FunctionArgExpr, FunctionArguments,
    UnaryOperator, Value,
};
use sqlparser::dialect::GenericDialect;
use sqlparser::parser::Parser;

/// Deepest nesting accepted, so a hostile definition cannot overflow the stack.
const MAX_DEPTH: usize = 64;

/// A type-checked expression, bound to column positions of one schema.
#[derive(Clone, Debug)]
pub struct Expr {
    node: Node,
    data_type: DataType,
}

#[derive(Clone, Debug)]
enum Node {
    Column(usize),
    Literal(Literal),
    Arith(ArithOp, Box<Expr>, Box<Expr>),
    Compare(CompareOp, Box<Expr>, Box<Expr>),
    And(Box<Expr>, Box<Expr>),
    Or(Box<Expr>, Box<Expr>),
    Not(Box<Expr>),
    Negate(Box<Expr>),
    IsNull(Box<Expr>, bool),
    Cast(Box<Expr>),
    Case(Vec<(Expr, Expr)>, Option<Box<Expr>>),
    Coalesce(Vec<Expr>),
    Abs(Box<Expr>),
    Lower(Box<Expr>),
    Upper(Box<Expr>),
    Extract(DatePart, Box<Expr>),
}

#[derive(Clone, Debug)]
enum Literal {
    Int(i64),
    Float(f64),
    Text(String),
    Bool(bool),
    Null,
}

#[derive(Clone, Copy, Debug)]
enum ArithOp {
    Add,
    Sub,
    Mul,
    Div,
    Rem,
}

#[derive(Clone, Copy, Debug)]
enum CompareOp {
    Eq,
    NotEq,
    Lt,
    LtEq,
    Gt,
    GtEq,
}

impl Expr {
    /// Parses `text` and checks it against `schema`. The error message says what is wrong
    /// and where, for the caller to wrap with the feature's name.
    pub fn compile(text: &str, schema: &Schema) -> Result<Self, String> {
        let dialect = GenericDialect {};
        let mut parser = Parser::new(&dialect)
            .try_with_sql(text)
            .map_err(|error| format!("cannot parse: {error}"))?;
        let ast = parser
            .parse_expr()
            .map_err(|error| format!("cannot parse: {error}"))?;
        let rest = parser.peek_token();
        if rest.token != sqlparser::tokenizer::Token::EOF {
            return Err(format!(
                "unexpected {} after the expression; write one expression",
                rest.token
            ));
        }
        bind(&ast, schema, 0)
    }

    /// Arrow type of the values this expression returns.
    pub fn data_type(&self) -> &DataType {
        &self.data_type
    }

    /// Evaluates the expression over `batch`, which must have the schema it was compiled for.
    pub fn evaluate(&self, batch: &RecordBatch) -> Result<ArrayRef, arrow::error::ArrowError> {
        let rows = batch.num_rows();
        match &self.node {
            Node::Column(index) => Ok(batch.column(*index).clone()),
            Node::Literal(literal) => Ok(literal_array(literal, &self.data_type, rows)),
            Node::Arith(op, left, right) => {
                let left = coerce(left.evaluate(batch)?, &self.data_type, op)?;
                let right = coerce(right.evaluate(batch)?, &self.data_type, op)?;
                arith(*op, &left, &right)
            }
            Node::Compare(op, left, right) => {
                let (left, right) = (left.evaluate(batch)?, right.evaluate(batch)?);
                // A comparison with an untyped NULL is NULL in every row.
                if left.data_type() == &DataType::Null || right.data_type() == &DataType::Null {
                    return Ok(Arc::new(BooleanArray::new_null(rows)));
                }
                let (left, right) = unify(left, right)?;
                let result = match op {
                    CompareOp::Eq => cmp::eq(&left, &right)?,
                    CompareOp::NotEq => cmp::neq(&left, &right)?,
                    CompareOp::Lt => cmp::lt(&left, &right)?,
                    CompareOp::LtEq => cmp::lt_eq(&left, &right)?,
                    CompareOp::Gt => cmp::gt(&left, &right)?,
                    CompareOp::GtEq => cmp::gt_eq(&left, &right)?,
                };
                Ok(Arc::new(result))
            }
            Node::And(left, right) => {
                let left = left.evaluate(batch)?;
                let right = right.evaluate(batch)?;
                Ok(Arc::new(and_kleene(&as_bool(&left)?, &as_bool(&right)?)?))
            }
            Node::Or(left, right) => {
                let left = left.evaluate(batch)?;
                let right = right.evaluate(batch)?;
                Ok(Arc::new(or_kleene(&as_bool(&left)?, &as_bool(&right)?)?))
            }
            Node::Not(inner) => Ok(Arc::new(not(&as_bool(&inner.evaluate(batch)?)?)?)),
            Node::Negate(inner) => {
                let values = inner.evaluate(batch)?;
                if values.data_type() == &DataType::Null {
                    return Ok(new_null_array(&self.data_type, rows));
                }
                let zero = literal_array(&Literal::Int(0), &DataType::Int64, rows);
                let zero = cast(&zero, values.data_type())?;
                arith(ArithOp::Sub, &zero, &values)
            }
            Node::IsNull(inner, negated) => {
                let values = inner.evaluate(batch)?;
                let result = if *negated {
                    is_not_null(&values)?
                } else {
                    is_null(&values)?
                };
                Ok(Arc::new(result))
            }
            Node::Cast(inner) => cast(&inner.evaluate(batch)?, &self.data_type),
            Node::Case(branches, otherwise) => {
                let mut result = match otherwise {
                    Some(otherwise) => cast(&otherwise.evaluate(batch)?, &self.data_type)?,
                    None => new_null_array(&self.data_type, rows),
                };
                for (condition, value) in branches.iter().rev() {
                    let condition = condition.evaluate(batch)?;
                    let value = cast(&value.evaluate(batch)?, &self.data_type)?;
                    result =
                        arrow::compute::kernels::zip::zip(&as_bool(&condition)?, &value, &result)?;
                }
                Ok(result)
            }
            Node::Coalesce(arguments) => {
                let mut result = new_null_array(&self.data_type, rows);
                for argument in arguments.iter().rev() {
                    let value = cast(&argument.evaluate(batch)?, &self.data_type)?;
                    let present = is_not_null(&value)?;
                    result = arrow::compute::kernels::zip::zip(&present, &value, &result)?;
                }
                Ok(result)
            }
            Node::Abs(inner) => {
                let values = inner.evaluate(batch)?;
                match values.data_type() {
                    DataType::Int64 => {
                        let values = values.as_any().downcast_ref::<Int64Array>().expect("int64");
                        let result: Int64Array = values
                            .iter()
                            .map(|v| v.and_then(i64::checked_abs))
                            .collect();
                        Ok(Arc::new(result))
                    }
                    _ => {
                        let values = cast(&values, &DataType::Float64)?;
                        let values = values
                            .as_any()
                            .downcast_ref::<Float64Array>()
                            .expect("float64");
                        let result: Float64Array = values.iter().map(|v| v.map(f64::abs)).collect();
                        Ok(Arc::new(result))
                    }
                }
            }
            Node::Lower(inner) => map_text(&inner.evaluate(batch)?, str::to_lowercase),
            Node::Upper(inner) => map_text(&inner.evaluate(batch)?, str::to_uppercase),
            Node::Extract(part, inner) => {
                let parts = date_part(&inner.evaluate(batch)?, *part)?;
                cast(&parts, &DataType::Int64)
            }
        }
    }
}

/// A boolean operand. An untyped NULL (the literal `NULL`, or an operator over NULLs only)
/// is a boolean NULL in every row, so `NULL AND x`, `NOT NULL` and `CASE WHEN NULL` follow
/// SQL's three-valued logic.
fn as_bool(array: &ArrayRef) -> Result<BooleanArray, arrow::error::ArrowError> {
    match array.data_type() {
        DataType::Boolean => Ok(array.as_boolean().clone()),
        DataType::Null => Ok(BooleanArray::new_null(array.len())),
        other => Err(arrow::error::ArrowError::CastError(format!(
            "expected a boolean operand, got {other}"
        ))),
    }
}

fn map_text(
    values: &ArrayRef,
    function: fn(&str) -> String,
) -> Result<ArrayRef, arrow::error::ArrowError> {
    let values = values
        .as_any()
        .downcast_ref::<StringArray>()
        .ok_or_else(|| arrow::error::ArrowError::CastError("expected a string array".to_owned()))?;
    let result: StringArray = values.iter().map(|v| v.map(function)).collect();
    Ok(Arc::new(result))
}

fn literal_array(literal: &Literal, data_type: &DataType, rows: usize) -> ArrayRef {
    match literal {
        Literal::Int(value) => Arc::new(Int64Array::from_value(*value, rows)),
        Literal::Float(value) => Arc::new(Float64Array::from_value(*value, rows)),
        Literal::Text(value) => Arc::new(StringArray::from_iter_values(std::iter::repeat_n(
            value.as_str(),
            rows,
        ))),
        Literal::Bool(value) => Arc::new(BooleanArray::from(vec![*value; rows])),
        Literal::Null => new_null_array(data_type, rows),
    }
}

/// Casts an operand of an arithmetic node to the node's computation type: Float64 for `/`
/// and mixed operands, otherwise the node's own type.
fn coerce(
    values: ArrayRef,
    data_type: &DataType,
    op: &ArithOp,
) -> Result<ArrayRef, arrow::error::ArrowError> {
    let target = match op {
        ArithOp::Div => &DataType::Float64,
        _ => data_type,
    };
    if values.data_type() == target {
        Ok(values)
    } else {
        cast(&values, target)
    }
}

/// Brings two comparison operands to one type: numbers to Float64 when they differ, a
/// string literal to the other side's timestamp type.
fn unify(
    left: ArrayRef,
    right: ArrayRef,
) -> Result<(ArrayRef, ArrayRef), arrow::error::ArrowError> {
    if left.data_type() == right.data_type() {
        return Ok((left, right));
    }
    match (left.data_type(), right.data_type()) {
        (DataType::Timestamp(..), _) => {
            let right = cast(&right, left.data_type())?;
            Ok((left, right))
        }
        (_, DataType::Timestamp(..)) => {
            let left = cast(&left, right.data_type())?;
            Ok((left, right))
        }
        (DataType::Null, other) => Ok((cast(&left, other)?, right)),
        (other, DataType::Null) => {
            let right = cast(&right, other)?;
            Ok((left, right))
        }
        _ => Ok((
            cast(&left, &DataType::Float64)?,
            cast(&right, &DataType::Float64)?,
        )),
    }
}

/// Applies an arithmetic operator row by row. Rows where the divisor is zero or an integer
/// result overflows become NULL instead of failing the whole batch.
fn arith(
    op: ArithOp,
    left: &ArrayRef,
    right: &ArrayRef,
) -> Result<ArrayRef, arrow::error::ArrowError> {
    if let (Some(left), Some(right)) = (
        left.as_any().downcast_ref::<Int64Array>(),
        right.as_any().downcast_ref::<Int64Array>(),
    ) {
        let result: Int64Array = left
            .iter()
            .zip(right.iter())
            .map(|(a, b)| {
                let (a, b) = (a?, b?);
                match op {
                    ArithOp::Add => a.checked_add(b),
                    ArithOp::Sub => a.checked_sub(b),
                    ArithOp::Mul => a.checked_mul(b),
                    ArithOp::Rem => a.checked_rem(b),
                    ArithOp::Div => a.checked_div(b),
                }
            })
            .collect();
        return Ok(Arc::new(result));
    }
    match op {
        ArithOp::Add => numeric::add(left, right),
        ArithOp::Sub => numeric::sub(left, right),
        ArithOp::Mul => numeric::mul(left, right),
        ArithOp::Div | ArithOp::Rem => {
            let zero = Float64Array::from_value(0.0, right.len());
            let is_zero = cmp::eq(right, &zero)?;
            let divisor = nullif(right, &is_zero)?;
            match op {
                ArithOp::Div => numeric::div(left, &divisor),
                _ => numeric::rem(left, &divisor),
            }
        }
    }
}

fn is_numeric(data_type: &DataType) -> bool {
    matches!(
        data_type,
        DataType::Int64 | DataType::Float64 | DataType::Null
    )
}

fn describe(data_type: &DataType) -> &'static str {
    match data_type {
        DataType::Int64 => "integer",
        DataType::Float64 => "float",
        DataType::Utf8 => "string",
        DataType::Boolean => "boolean",
        DataType::Date32 => "date",
        DataType::Timestamp(..) => "timestamp",
        DataType::Null => "null",
        _ => "unsupported",
    }
}

fn typed(node: Node, data_type: DataType) -> Result<Expr, String> {
    Ok(Expr { node, data_type })
}

fn bind(ast: &sql::Expr, schema: &Schema, depth: usize) -> Result<Expr, String> {
    if depth > MAX_DEPTH {
        return Err(format!("nested deeper than {MAX_DEPTH} levels"));
    }
    let child = |expr: &sql::Expr| bind(expr, schema, depth + 1).map(Box::new);
    match ast {
        sql::Expr::Identifier(ident) => bind_column(&ident.value, schema),
        sql::Expr::CompoundIdentifier(parts) => Err(format!(
            "qualified name {} is not supported; name the column alone",
            parts
                .iter()
                .map(|p| p.value.as_str())
                .collect::<Vec<_>>()
                .join(".")
        )),
        sql::Expr::Value(value) => bind_literal(&value.value),
        sql::Expr::Nested(inner) => bind(inner, schema, depth + 1),
        sql::Expr::UnaryOp { op, expr } => {
            let inner = child(expr)?;
            match op {
                UnaryOperator::Not => {
                    expect_bool(&inner, "NOT")?;
                    typed(Node::Not(inner), DataType::Boolean)
                }
                UnaryOperator::Minus => {
                    if !is_numeric(&inner.data_type) {
                        return Err(format!(
                            "unary minus needs a number, not a {}",
                            describe(&inner.data_type)
                        ));
                    }
                    let data_type = match inner.data_type {
                        DataType::Null => DataType::Int64,
                        ref other => other.clone(),
                    };
                    typed(Node::Negate(inner), data_type)
                }
                UnaryOperator::Plus => Ok(*inner),
                other => Err(format!("operator {other} is not supported")),
            }
        }
        sql::Expr::BinaryOp { left, op, right } => bind_binary(op, child(left)?, child(right)?),
        sql::Expr::IsNull(inner) => typed(Node::IsNull(child(inner)?, false), DataType::Boolean),
        sql::Expr::IsNotNull(inner) => typed(Node::IsNull(child(inner)?, true), DataType::Boolean),
        sql::Expr::Between {
            expr,
            negated,
            low,
            high,
        } => {
            let low = bind_binary(&BinaryOperator::GtEq, child(expr)?, child(low)?)?;
            let high = bind_binary(&BinaryOperator::LtEq, child(expr)?, child(high)?)?;
            let both = typed(Node::And(Box::new(low), Box::new(high)), DataType::Boolean)?;
            if *negated {
                typed(Node::Not(Box::new(both)), DataType::Boolean)
            } else {
                Ok(both)
            }
        }
        sql::Expr::Cast {
            expr, data_type, ..
        } => {
            let target = match data_type {
                sql::DataType::BigInt(_)
                | sql::DataType::Int(_)
                | sql::DataType::Integer(_)
                | sql::DataType::Int64 => DataType::Int64,
                sql::DataType::Double(_)
                | sql::DataType::DoublePrecision
                | sql::DataType::Float(_)
                | sql::DataType::Float64
                | sql::DataType::Float8
                | sql::DataType::Real => DataType::Float64,
                sql::DataType::Varchar(_) | sql::DataType::Text | sql::DataType::String(_) => {
                    DataType::Utf8
                }
                sql::DataType::Boolean | sql::DataType::Bool => DataType::Boolean,
                other => {
                    return Err(format!(
                        "CAST to {other} is not supported; use BIGINT, DOUBLE, VARCHAR or BOOLEAN"
                    ));
                }
            };
            typed(Node::Cast(child(expr)?), target)
        }
        sql::Expr::Case {
            operand,
            conditions,
            else_result,
            ..
        } => bind_case(
            operand.as_deref(),
            conditions,
            else_result.as_deref(),
            schema,
            depth,
        ),
        sql::Expr::Extract { field, expr, .. } => {
            let inner = child(expr)?;
            if !matches!(inner.data_type, DataType::Timestamp(..) | DataType::Date32) {
                return Err(format!(
                    "EXTRACT needs a timestamp or date, not a {}",
                    describe(&inner.data_type)
                ));
            }
            let part = match field {
                DateTimeField::Year => DatePart::Year,
                DateTimeField::Month => DatePart::Month,
                DateTimeField::Day => DatePart::Day,
                DateTimeField::Hour => DatePart::Hour,
                DateTimeField::Minute => DatePart::Minute,
                DateTimeField::DayOfWeek | DateTimeField::Dow => DatePart::DayOfWeekSunday0,
                DateTimeField::DayOfYear | DateTimeField::Doy => DatePart::DayOfYear,
                other => {
                    return Err(format!(
                        "EXTRACT({other}) is not supported; use YEAR, MONTH, DAY, HOUR, MINUTE, DOW or DOY"
                    ));
                }
            };
            typed(Node::Extract(part, inner), DataType::Int64)
        }
        sql::Expr::Function(function) => bind_function(function, schema, depth),
        other => Err(format!("{other} is not a supported expression")),
    }
}

fn bind_column(name: &str, schema: &Schema) -> Result<Expr, String> {
    let Ok(index) = schema.index_of(name) else {
        let columns: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
        return Err(format!(
            "unknown column {name:?}; the dataset has {}",
            columns.join(", ")
        ));
    };
    let data_type = schema.field(index).data_type().clone();
    if describe(&data_type) == "unsupported" {
        return Err(format!(
            "column {name:?} has the unsupported type {data_type}"
        ));
    }
    typed(Node::Column(index), data_type)
}

fn bind_literal(value: &Value) -> Result<Expr, String> {
    match value {
        Value::Number(text, _) => {
            if let Ok(int) = text.parse::<i64>() {
                typed(Node::Literal(Literal::Int(int)), DataType::Int64)
            } else {
                let float: f64 = text
                    .parse()
                    .map_err(|_| format!("{text} is not a valid number"))?;
                typed(Node::Literal(Literal::Float(float)), DataType::Float64)
            }
        }
        Value::SingleQuotedString(text) => {
            typed(Node::Literal(Literal::Text(text.clone())), DataType::Utf8)
        }
        Value::Boolean(value) => typed(Node::Literal(Literal::Bool(*value)), DataType::Boolean),
        Value::Null => typed(Node::Literal(Literal::Null), DataType::Null),
        other => Err(format!("literal {other} is not supported")),
    }
}

fn expect_bool(expr: &Expr, context: &str) -> Result<(), String> {
    match expr.data_type {
        DataType::Boolean | DataType::Null => Ok(()),
        ref other => Err(format!(
            "{context} needs a boolean, not a {}",
            describe(other)
        )),
    }
}

fn bind_binary(op: &BinaryOperator, left: Box<Expr>, right: Box<Expr>) -> Result<Expr, String> {
    let arith = match op {
        BinaryOperator::Plus => Some(ArithOp::Add),
        BinaryOperator::Minus => Some(ArithOp::Sub),
        BinaryOperator::Multiply => Some(ArithOp::Mul),
        BinaryOperator::Divide => Some(ArithOp::Div),
        BinaryOperator::Modulo => Some(ArithOp::Rem),
        _ => None,
    };
    if let Some(arith) = arith {
        for side in [&left, &right] {
            if !is_numeric(&side.data_type) {
                return Err(format!(
                    "{op} needs numbers, not a {}",
                    describe(&side.data_type)
                ));
            }
        }
        let both_int = !matches!(left.data_type, DataType::Float64)
            && !matches!(right.data_type, DataType::Float64);
        let data_type = if both_int && !matches!(arith, ArithOp::Div) {
            DataType::Int64
        } else {
            DataType::Float64
        };
        return typed(Node::Arith(arith, left, right), data_type);
    }

    let compare = match op {
        BinaryOperator::Eq => Some(CompareOp::Eq),
        BinaryOperator::NotEq => Some(CompareOp::NotEq),
        BinaryOperator::Lt => Some(CompareOp::Lt),
        BinaryOperator::LtEq => Some(CompareOp::LtEq),
        BinaryOperator::Gt => Some(CompareOp::Gt),
        BinaryOperator::GtEq => Some(CompareOp::GtEq),
        _ => None,
    };
    if let Some(compare) = compare {
        let comparable = match (&left.data_type, &right.data_type) {
            (DataType::Null, _) | (_, DataType::Null) => true,
            (a, b) if is_numeric(a) && is_numeric(b) => true,
            (DataType::Timestamp(..), DataType::Utf8 | DataType::Timestamp(..)) => true,
            (DataType::Utf8, DataType::Timestamp(..)) => true,
            (a, b) => a == b,
        };
        if !comparable {
            return Err(format!(
                "cannot compare a {} with a {}",
                describe(&left.data_type),
                describe(&right.data_type)
            ));
        }
        return typed(Node::Compare(compare, left, right), DataType::Boolean);
    }

    match op {
        BinaryOperator::And | BinaryOperator::Or => {
            expect_bool(&left, "AND/OR")?;
            expect_bool(&right, "AND/OR")?;
            let node = if matches!(op, BinaryOperator::And) {
                Node::And(left, right)
            } else {
                Node::Or(left, right)
            };
            typed(node, DataType::Boolean)
        }
        other => Err(format!("operator {other} is not supported")),
    }
}

/// Returns the common type of CASE or COALESCE branches: one shared type, or Float64 for a
/// mix of integers and floats.
fn common_type<'a>(types: impl Iterator<Item = &'a DataType>) -> Result<DataType, String> {
    let mut common = DataType::Null;
    for data_type in types {
        common = match (&common, data_type) {
            (_, DataType::Null) => common,
            (DataType::Null, other) => other.clone(),
            (a, b) if a == b => common,
            (a, b) if is_numeric(a) && is_numeric(b) => DataType::Float64,
            (a, b) => {
                return Err(format!(
                    "branches mix a {} and a {}; cast them to one type",
                    describe(a),
                    describe(b)
                ));
            }
        };
    }
    Ok(common)
}

fn bind_case(
    operand: Option<&sql::Expr>,
    conditions: &[sql::CaseWhen],
    otherwise: Option<&sql::Expr>,
    schema: &Schema,
    depth: usize,
) -> Result<Expr, String> {
    let mut branches = Vec::with_capacity(conditions.len());
    for when in conditions {
        let condition = match operand {
            Some(operand) => bind_binary(
                &BinaryOperator::Eq,
                Box::new(bind(operand, schema, depth + 1)?),
                Box::new(bind(&when.condition, schema, depth + 1)?),
            )?,
            None => bind(&when.condition, schema, depth + 1)?,
        };
        expect_bool(&condition, "WHEN")?;
        let value = bind(&when.result, schema, depth + 1)?;
        branches.push((condition, value));
    }
    let otherwise = otherwise
        .map(|e| bind(e, schema, depth + 1).map(Box::new))
        .transpose()?;
    let data_type = common_type(
        branches
            .iter()
            .map(|(_, v)| &v.data_type)
            .chain(otherwise.iter().map(|e| &e.data_type)),
    )?;
    let data_type = if data_type == DataType::Null {
        DataType::Int64
    } else {
        data_type
    };
    typed(Node::Case(branches, otherwise), data_type)
}

fn bind_function(function: &sql::Function, schema: &Schema, depth: usize) -> Result<Expr, String> {
    let name = function.name.to_string().to_ascii_lowercase();
    let FunctionArguments::List(list) = &function.args else {
        return Err(format!("{name} needs an argument list in parentheses"));
    };
    if list.duplicate_treatment.is_some() || !list.clauses.is_empty() {
        return Err(format!(
            "{name}: DISTINCT and other clauses are not supported"
        ));
    }
    let mut arguments = Vec::with_capacity(list.args.len());
    for argument in &list.args {
        match argument {
            FunctionArg::Unnamed(FunctionArgExpr::Expr(expr)) => {
                arguments.push(bind(expr, schema, depth + 1)?)
            }
            _ => return Err(format!("{name}: only plain arguments are supported")),
        }
    }
    let one = |mut arguments: Vec<Expr>| {
        if arguments.len() == 1 {
            Ok(Box::new(arguments.remove(0)))
        } else {
            Err(format!(
                "{name} takes one argument, not {}",
                arguments.len()
            ))
        }
    };
    match name.as_str() {
        "coalesce" => {
            if arguments.is_empty() {
                return Err("coalesce needs at least one argument".to_owned());
            }
            let data_type = common_type(arguments.iter().map(|a| &a.data_type))?;
            typed(Node::Coalesce(arguments), data_type)
        }
        "abs" => {
            let inner = one(arguments)?;
            if !is_numeric(&inner.data_type) {
                return Err(format!(
                    "abs needs a number, not a {}",
                    describe(&inner.data_type)
                ));
            }
            let data_type = if inner.data_type == DataType::Int64 {
                DataType::Int64
            } else {
                DataType::Float64
            };
            typed(Node::Abs(inner), data_type)
        }
        "lower" | "upper" => {
            let inner = one(arguments)?;
            if inner.data_type != DataType::Utf8 {
                return Err(format!(
                    "{name} needs a string, not a {}",
                    describe(&inner.data_type)
                ));
            }
            let node = if name == "lower" {
                Node::Lower(inner)
            } else {
                Node::Upper(inner)
            };
            typed(node, DataType::Utf8)
        }
        other => Err(format!(
            "unknown function {other}; the supported functions are coalesce, abs, lower and upper"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::datatypes::{Field, TimeUnit};

    fn batch() -> RecordBatch {
        let schema = Schema::new(vec![
            Field::new("a", DataType::Int64, true),
            Field::new("b", DataType::Float64, true),
            Field::new("s", DataType::Utf8, true),
            Field::new(
                "ts",
                DataType::Timestamp(TimeUnit::Microsecond, Some("+00:00".into())),
                true,
            ),
        ]);
        let ts = arrow::array::TimestampMicrosecondArray::from(vec![
            Some(3_600_000_000 * 5),
            None,
            Some(3_600_000_000 * 30),
        ])
        .with_timezone("+00:00");
        RecordBatch::try_new(
            Arc::new(schema),
            vec![
                Arc::new(Int64Array::from(vec![Some(1), Some(0), None])),
                Arc::new(Float64Array::from(vec![Some(2.5), Some(-1.0), Some(4.0)])),
                Arc::new(StringArray::from(vec![Some("Ab"), None, Some("c")])),
                Arc::new(ts),
            ],
        )
        .unwrap()
    }

    fn eval(text: &str) -> ArrayRef {
        let batch = batch();
        let expr = Expr::compile(text, &batch.schema()).unwrap_or_else(|e| panic!("{text}: {e}"));
        let result = expr.evaluate(&batch).unwrap();
        assert_eq!(result.data_type(), expr.data_type(), "{text}");
        result
    }

    fn ints(array: &ArrayRef) -> Vec<Option<i64>> {
        array
            .as_any()
            .downcast_ref::<Int64Array>()
            .unwrap()
            .iter()
            .collect()
    }

    fn floats(array: &ArrayRef) -> Vec<Option<f64>> {
        array
            .as_any()
            .downcast_ref::<Float64Array>()
            .unwrap()
            .iter()
            .collect()
    }

    fn bools(array: &ArrayRef) -> Vec<Option<bool>> {
        array
            .as_any()
            .downcast_ref::<BooleanArray>()
            .unwrap()
            .iter()
            .collect()
    }

    #[test]
    fn arithmetic_keeps_integers() {
        assert_eq!(ints(&eval("a * 10 + 1")), vec![Some(11), Some(1), None]);
        assert_eq!(floats(&eval("a + b")), vec![Some(3.5), Some(-1.0), None]);
        assert_eq!(floats(&eval("b / a")), vec![Some(2.5), None, None]);
        assert_eq!(ints(&eval("-a")), vec![Some(-1), Some(0), None]);
        assert_eq!(
            ints(&eval("9223372036854775807 + a")),
            vec![None, Some(i64::MAX), None]
        );
    }

    #[test]
    fn logic_is_three_valued() {
        assert_eq!(
            bools(&eval("a > 0 AND b > 0")),
            vec![Some(true), Some(false), None]
        );
        assert_eq!(
            bools(&eval("a > 0 OR b > 0")),
            vec![Some(true), Some(false), Some(true)]
        );
        assert_eq!(
            bools(&eval("a IS NULL")),
            vec![Some(false), Some(false), Some(true)]
        );
        assert_eq!(
            bools(&eval("b BETWEEN 0 AND 3")),
            vec![Some(true), Some(false), Some(false)]
        );
    }

    #[test]
    fn case_coalesce_and_functions() {
        assert_eq!(
            floats(&eval("CASE WHEN a = 1 THEN b WHEN a = 0 THEN 0 END")),
            vec![Some(2.5), Some(0.0), None]
        );
        assert_eq!(
            ints(&eval("coalesce(a, 7)")),
            vec![Some(1), Some(0), Some(7)]
        );
        assert_eq!(
            floats(&eval("abs(b)")),
            vec![Some(2.5), Some(1.0), Some(4.0)]
        );
        let lower = eval("lower(s)");
        let lower = lower.as_any().downcast_ref::<StringArray>().unwrap();
        assert_eq!(
            lower.iter().collect::<Vec<_>>(),
            vec![Some("ab"), None, Some("c")]
        );
        assert_eq!(
            ints(&eval("EXTRACT(HOUR FROM ts)")),
            vec![Some(5), None, Some(6)]
        );
        assert_eq!(
            ints(&eval("CAST(b AS BIGINT)")),
            vec![Some(2), Some(-1), Some(4)]
        );
    }

    #[test]
    fn untyped_null_in_boolean_logic() {
        // Each used to fail at evaluation with "expected a boolean array", a 500 without the
        // feature's name.
        assert_eq!(
            bools(&eval("NULL AND a > 0")),
            vec![None, Some(false), None]
        );
        assert_eq!(bools(&eval("a > 0 OR NULL")), vec![Some(true), None, None]);
        assert_eq!(bools(&eval("NOT NULL")), vec![None, None, None]);
        assert_eq!(bools(&eval("NULL = NULL")), vec![None, None, None]);
        assert_eq!(bools(&eval("a = NULL")), vec![None, None, None]);
        assert_eq!(bools(&eval("NULL IS NULL")), vec![Some(true); 3]);
        assert_eq!(
            ints(&eval("CASE WHEN NULL THEN 1 ELSE 0 END")),
            vec![Some(0), Some(0), Some(0)]
        );
        assert_eq!(ints(&eval("-NULL")), vec![None, None, None]);
        assert_eq!(ints(&eval("NULL + a")), vec![None, None, None]);
    }

    #[test]
    fn bad_expressions_rejected() {
        let schema = batch().schema();
        for (text, expected) in [
            ("a +", "cannot parse"),
            ("missing + 1", "unknown column \"missing\""),
            ("s * 2", "needs numbers"),
            ("a AND b", "needs a boolean"),
            ("s = 1", "cannot compare"),
            ("sqrt(a)", "unknown function sqrt"),
            ("a 1", "after the expression"),
        ] {
            let error = Expr::compile(text, &schema).unwrap_err();
            assert!(error.contains(expected), "{text}: {error}");
        }
    }
}
