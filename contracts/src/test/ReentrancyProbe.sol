// SPDX-License-Identifier: MIT
pragma solidity 0.8.37;

import {IERC721Receiver} from "@openzeppelin/contracts/token/ERC721/IERC721Receiver.sol";
import {Address} from "@openzeppelin/contracts/utils/Address.sol";

/// @title ReentrancyProbe
/// @notice Test fixture: a contract account that makes calls, accepts ERC-721 tokens, and, once armed, makes
/// one call back from `onERC721Received`, bubbling up its revert (so a blocked re-entry fails the outer call
/// with the guard's error).
contract ReentrancyProbe is IERC721Receiver {
    address private _target;
    bytes private _payload;

    /// @notice Calls `target` with `data` from this account; reverts with its revert data.
    function exec(address target, bytes calldata data) external returns (bytes memory) {
        return Address.functionCall(target, data);
    }

    /// @notice Arms the next `onERC721Received` to call `target` with `data`.
    function arm(address target, bytes calldata data) external {
        _target = target;
        _payload = data;
    }

    /// @notice Accepts the token after the armed call, if any.
    function onERC721Received(address, address, uint256, bytes calldata) external returns (bytes4) {
        address target = _target;
        if (target != address(0)) {
            delete _target;
            Address.functionCall(target, _payload);
        }
        return IERC721Receiver.onERC721Received.selector;
    }
}
