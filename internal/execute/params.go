package execute

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
)

// Bounds on an operation's params. Every operation stays in the manager's
// cache until it is cleaned up, and CEL walks params on every evaluation, so
// a few hostile operations must not be able to cost the manager its memory
// or its stack. Both bounds are far above what a change request carries.
const (
	// MaxParamsBytes is the largest params, as JSON.
	MaxParamsBytes = 256 * 1024
	// MaxParamsDepth is the deepest nesting of objects and arrays in params.
	MaxParamsDepth = 32
)

// CheckParams reports params that exceed MaxParamsBytes or MaxParamsDepth.
func CheckParams(raw []byte) error {
	if len(raw) > MaxParamsBytes {
		return fmt.Errorf("is %d bytes of JSON; at most %d are allowed", len(raw), MaxParamsBytes)
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	depth := 0
	for {
		tok, err := dec.Token()
		if errors.Is(err, io.EOF) && depth == 0 {
			return nil
		}
		if err != nil {
			return fmt.Errorf("is not valid JSON: %w", err)
		}
		switch tok {
		case json.Delim('{'), json.Delim('['):
			depth++
			if depth > MaxParamsDepth {
				return fmt.Errorf("nests objects and arrays more than %d levels deep", MaxParamsDepth)
			}
		case json.Delim('}'), json.Delim(']'):
			depth--
		}
	}
}
