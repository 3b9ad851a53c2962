//go:build !linux

package main

import (
	"context"
	"errors"
	"runtime"

	"github.com/svcplan/svcplan/translate"
)

// errNotLinux is returned on systems without network namespaces.
var errNotLinux = errors.New("network namespaces need Linux, not " + runtime.GOOS)

func checkForeignNetNS(string) error { return errNotLinux }

func apply(context.Context, *translate.Plan, string) error { return errNotLinux }

func cleanup(context.Context, translate.Mode, string) error { return errNotLinux }
