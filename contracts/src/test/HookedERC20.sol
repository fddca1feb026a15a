// SPDX-License-Identifier: MIT
pragma solidity 0.8.37;

import {ERC20} from "@openzeppelin/contracts/token/ERC20/ERC20.sol";
import {Address} from "@openzeppelin/contracts/utils/Address.sol";

/// @title HookedERC20
/// @notice Test fixture: a malicious ERC-20 that, once armed, makes one call back from its next transfer,
/// bubbling up its revert. Stands in for Auton to test re-entry through the payment token.
contract HookedERC20 is ERC20 {
    address private _target;
    bytes private _payload;

    constructor() ERC20("Hooked", "HOOK") {}

    /// @notice Mints `amount` to `to`, unrestricted.
    function mint(address to, uint256 amount) external {
        _mint(to, amount);
    }

    /// @notice Arms the next transfer to call `target` with `data`.
    function arm(address target, bytes calldata data) external {
        _target = target;
        _payload = data;
    }

    function _update(address from, address to, uint256 value) internal override {
        super._update(from, to, value);
        address target = _target;
        if (target != address(0)) {
            delete _target;
            Address.functionCall(target, _payload);
        }
    }
}
