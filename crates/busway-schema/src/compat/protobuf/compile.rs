//! Compiling a schema's `.proto` source, with Google's well-known types available.

use prost_reflect::{DescriptorPool, FileDescriptor};
use protox::Compiler;
use protox::file::{ChainFileResolver, File, FileResolver, GoogleFileResolver};

use crate::error::SchemaError;
use crate::schema::{Schema, SchemaFormat};

/// The name the schema's source gets inside the compiler.
const FILE_NAME: &str = "busway_schema.proto";

/// Resolves the schema's own file from memory and the well-known types from protox's copies.
struct InMemory {
    pub(super) source: String,
}

impl FileResolver for InMemory {
    fn open_file(&self, name: &str) -> Result<File, protox::Error> {
        if name == FILE_NAME {
            File::from_source(name, &self.source)
        } else {
            Err(protox::Error::file_not_found(name))
        }
    }
}

/// Compiles a Protobuf schema into descriptors.
pub(super) fn compile(schema: &Schema) -> Result<FileDescriptor, SchemaError> {
    let invalid = |reason: String| SchemaError::InvalidSchema {
        format: SchemaFormat::Protobuf,
        reason,
    };
    let mut resolver = ChainFileResolver::new();
    resolver.add(InMemory {
        source: schema.definition().to_owned(),
    });
    resolver.add(GoogleFileResolver::new());
    let mut compiler = Compiler::with_file_resolver(resolver);
    compiler
        .open_file(FILE_NAME)
        .map_err(|e| invalid(e.to_string()))?;
    let pool: DescriptorPool = compiler.descriptor_pool();
    pool.get_file_by_name(FILE_NAME)
        .ok_or_else(|| invalid("the compiled schema has no file".into()))
}
